"""Learning rate x width under standard parametrisation and muP: configs/mup.py's `transfer`
(2 blocks, 200 steps of 8 x 64 bytes of the embedded corpus; 4 heads, mlp 4 x width; muP's base
width 128) at widths 128 to 1024, or those given as the argument, and learning rates 2^-11 to
2^-5, under both parametrisations.

Run (--dry_run prints the estimate per point: on 2 CPU cores a width-1024 point takes about
10 minutes, so the full grid is an accelerator's job; `:64,128,256` is the CPU's):
  python run.py --sweep=configs/sweeps/cpu_mup_transfer.py --workdir=runs/mup_transfer
  python run.py --sweep=configs/sweeps/cpu_mup_transfer.py:64,128,256 --workdir=runs/mup_small
  python run.py --mode=analyze --workdir=runs/mup_transfer
Expected (`:64,128,256`, measured 2026-12-08 in 11 minutes; final eval nats/byte): loss-optimal
lr 2^-9, 2^-10, 2^-9 under muP (drift 0) and 2^-9, 2^-10, 2^-10 under standard
parametrisation (drift -1); the README has the table and plot. The default widths (to 1024)
are not yet measured.
"""

from configs import mup
from jtrans.scaling import sweep

WIDTHS = "128,256,512,1024"
LRS = [2.0**-k for k in range(11, 4, -1)]
PARAMETRIZATIONS = ["standard", "mup"]


def get_config(widths: str = WIDTHS):
  del widths  # The base is the same for any widths.
  return mup.get_config("transfer")


def get_sweep(widths: str = WIDTHS) -> list[dict]:
  sizes = [int(w) for w in widths.split(",")]
  widths = sweep.zipped(
    sweep.axis("model.embed_dim", sizes), sweep.axis("model.mlp_dim", [4 * w for w in sizes])
  )
  return sweep.product(
    sweep.axis("model.parametrization", PARAMETRIZATIONS), widths, sweep.axis("optim.lr", LRS)
  )
