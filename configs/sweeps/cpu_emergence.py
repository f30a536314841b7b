"""Emergent abilities on the CPU: the four smallest rungs of configs/ladder.py (13k to 793k
non-embedding parameters) trained on a synthetic task, with the loss on the answer alone, so
that `analyze` plots the task's accuracy against compute beside the loss and its fitted L(C)
(accuracy_vs_compute.png; the report has an accuracy column). Two tasks:
`add97`: a + b mod 97 (answer: one word token; half the pairs train, half test), batches of
256 equations, weight decay 1 as in the grokking recipes; `reverse`: strings of 1 to 32 letters
reversed (byte tokens; accuracy per answer byte).

Run (--dry_run prints the estimate per point):
  python run.py --sweep=configs/sweeps/cpu_emergence.py:add97 --workdir=runs/emergence_add97
  python run.py --mode=analyze --workdir=runs/emergence_add97
  python run.py --sweep=configs/sweeps/cpu_emergence.py:reverse --workdir=runs/emergence_reverse
Expected (`add97`, measured 2026-12-08: 8 minutes; the README shows the plot): eval loss 2.425,
1.078, 1.684 and 0.945 and answer accuracy 0.174, 0.745, 0.270 and 0.689 for 13k, 100k, 336k
and 793k. Each run's accuracy sits near 0 and then climbs steeply once its loss falls below
about 2.5 nats, at a compute that grows with the size; at this one learning rate the sizes are
not in order (336k trails 100k), so L(C) (3 points on the frontier) means little yet.
`reverse` is not yet measured.
"""

from configs import ladder

RUNGS = ["13k", "100k", "336k", "793k"]
# task: (data set, tokenizer, seq_len, batch rows, steps, weight decay)
TASKS = {
  "add97": ("modular_arithmetic/add97", "word", 6, 256, 1500, 1.0),
  "reverse": ("reverse_strings", "byte", 72, 64, 1500, 0.1),
}


def get_config(task: str = "add97"):
  if task not in TASKS:
    raise ValueError(f"cpu_emergence: task {task!r} is not one of {sorted(TASKS)}.")
  name, tokenizer, seq_len, rows, steps, decay = TASKS[task]
  c = ladder.sweep_base(name, async_checkpoints=False)
  c.data.tokenizer, c.data.sampling, c.data.response_eos = tokenizer, "prompt_response", False
  c.data.seq_len = c.model.max_len = seq_len
  c.train.batch_size, c.train.steps = rows, steps
  c.train.eval_every = c.train.checkpoint_every = steps // 6
  c.optim.lr, c.optim.warmup_steps, c.optim.weight_decay = 3e-3, 100, decay
  return c


def get_sweep(task: str = "add97") -> list[dict]:
  seq_len = TASKS[task][2]
  points = []
  for rung in RUNGS:
    shape = ladder.shape(rung)
    points.append({**shape, "model.max_len": seq_len, "data.seq_len": seq_len})
  return points
