"""Learning rate x depth under muP alone and CompleteP, on the CPU: configs/mup.py's
`completep` (width 128, 300 steps of 8 x 64 bytes of the embedded corpus) at depths 2 to 8
(base depth 2) and learning rates 2^-11 to 2^-5.

Run (--dry_run prints the estimate per point):
  python run.py --sweep=configs/sweeps/cpu_completep_depth.py --workdir=runs/completep_depth
  python run.py --mode=analyze --workdir=runs/completep_depth
Expected: filled in once measured (transfer.md in the workdir gives the table).
"""

from configs import mup
from jtrans.scaling import sweep

DEPTHS = [2, 4, 8]
LRS = [2.0**-k for k in range(11, 4, -1)]
PARAMETRIZATIONS = ["mup", "completep"]


def get_config():
  return mup.get_config("completep")


def get_sweep() -> list[dict]:
  return sweep.product(
    sweep.axis("model.parametrization", PARAMETRIZATIONS),
    sweep.axis("model.num_layers", DEPTHS),
    sweep.axis("optim.lr", LRS),
  )
