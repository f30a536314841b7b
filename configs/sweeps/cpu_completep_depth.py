"""Learning rate x depth under muP alone and CompleteP, on the CPU: configs/mup.py's
`completep` (width 128, 200 steps of 8 x 64 bytes of the embedded corpus) at depths 2, 4 and 8,
or those given as the argument (base depth 2), and learning rates 2^-12 to 2^-6.

Run (--dry_run prints the estimate per point):
  python run.py --sweep=configs/sweeps/cpu_completep_depth.py --workdir=runs/completep_depth
  python run.py --sweep=configs/sweeps/cpu_completep_depth.py:2,8 --workdir=runs/completep_2_8
  python run.py --mode=analyze --workdir=runs/completep_depth
Expected: see the README's "Hyperparameter transfer and evaluation" (`:2,8` measured).
"""

from configs import mup
from jtrans.scaling import sweep

DEPTHS = "2,4,8"
LRS = [2.0**-k for k in range(12, 5, -1)]
PARAMETRIZATIONS = ["mup", "completep"]


def get_config(depths: str = DEPTHS):
  del depths  # The base is the same for any depths.
  return mup.get_config("completep")


def get_sweep(depths: str = DEPTHS) -> list[dict]:
  return sweep.product(
    sweep.axis("model.parametrization", PARAMETRIZATIONS),
    sweep.axis("model.num_layers", [int(d) for d in depths.split(",")]),
    sweep.axis("optim.lr", LRS),
  )
