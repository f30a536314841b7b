"""Learning rate x width under standard parametrisation and muP, on the CPU: configs/mup.py's
`transfer` (2 blocks, 300 steps of 8 x 64 bytes of the embedded corpus) at widths 128 to 1024
(4 heads, mlp 4 x width; muP's base width 128) and learning rates 2^-11 to 2^-5.

Run (--dry_run prints the estimate per point):
  python run.py --sweep=configs/sweeps/cpu_mup_transfer.py --workdir=runs/mup_transfer
  python run.py --mode=analyze --workdir=runs/mup_transfer
Expected: filled in once measured (transfer.md in the workdir gives the table).
"""

from configs import mup
from jtrans.scaling import sweep

WIDTHS = [128, 256, 512, 1024]
LRS = [2.0**-k for k in range(11, 4, -1)]
PARAMETRIZATIONS = ["standard", "mup"]


def get_config():
  return mup.get_config("transfer")


def get_sweep() -> list[dict]:
  widths = sweep.zipped(
    sweep.axis("model.embed_dim", WIDTHS), sweep.axis("model.mlp_dim", [4 * w for w in WIDTHS])
  )
  return sweep.product(
    sweep.axis("model.parametrization", PARAMETRIZATIONS), widths, sweep.axis("optim.lr", LRS)
  )
