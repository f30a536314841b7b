"""Learning rate x depth under muP alone and CompleteP, on the CPU: configs/mup.py's
`completep` (width 128, 200 steps of 8 x 64 bytes of the embedded corpus) at depths 2, 4 and 8,
or those given as the argument (base depth 2), and learning rates 2^-12 to 2^-6.

Run (--dry_run prints the estimate per point):
  python run.py --sweep=configs/sweeps/cpu_completep_depth.py --workdir=runs/completep_depth
  python run.py --sweep=configs/sweeps/cpu_completep_depth.py:2,8 --workdir=runs/completep_2_8
  python run.py --mode=analyze --workdir=runs/completep_depth
Expected (`:2,8`, measured 2026-12-08 in 10 minutes): the loss-optimal lr is 2^-10 at depths 2
and 8 under CompleteP (drift 0) and moves from 2^-10 to 2^-9 under muP alone (drift +1); the
README has the numbers. Depth 4 and the default grid are not yet measured.
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
