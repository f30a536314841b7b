"""Where a train step's time goes: a jax.profiler trace of N steps and its top HLO operations.

  PYTHONPATH=. python benchmarks/profile_step.py --shape=6x512            # issue 14's shapes
  PYTHONPATH=. python benchmarks/profile_step.py --shape=4x128 --steps=20
  PYTHONPATH=. python benchmarks/profile_step.py --config=configs/gpt2.py:small --shape=

The trace lands in --logdir (TensorBoard's profile plugin or XProf opens it:
`tensorboard --logdir=LOGDIR`). The tables sum each HLO operation's time over the traced steps
by model part (from the jax op_name XLA keeps in its metadata) and kind (matmul,
elementwise/reduce, copy/transpose), then list the costliest operations with the jax code each
came from, so a line points at a line of jtrans. MFU is against this machine's 2048x2048 float32
matmul, as in benchmarks/vs_pytorch.py.
"""

import collections
import glob
import re
import time

import common  # noqa: E402  (benchmarks/common.py; puts the project root on sys.path)
import jax
from absl import app, flags
from jax.profiler import ProfileData
from ml_collections import config_flags

from jtrans import flops, parts  # noqa: E402

config_flags.DEFINE_config_file("config", "configs/lm.py:tiny", "The run config to profile.")
flags.DEFINE_string("shape", "6x512", f"A benchmark shape ({', '.join(common.SHAPES)}) or ''.")
flags.DEFINE_integer("steps", 10, "Traced steps (after a warm-up step).")
flags.DEFINE_integer("top", 15, "HLO operations to list.")
flags.DEFINE_string("logdir", "/tmp/jtrans_profile", "Where the trace is written.")
FLAGS = flags.FLAGS


# Where an op's time goes, from the jax op_name XLA keeps: the first pattern that matches.
PARTS = (
  ("optimizer", r"optimizer/"),
  ("loss", r"/loss/|take_along_axis|log_softmax|logsumexp"),
  ("layer norm", r"_norm/|/ln"),
  ("attention core", r"/attention/(?!attention\._project|out/)"),
  ("attention projections", r"/attention/"),
  ("mlp", r"/mlp/"),
  ("embeddings and logits", r"embed|logits|project"),
)


def part(op_name: str) -> str:
  for name, pattern in PARTS:
    if re.search(pattern, op_name):
      return name
  return "other"


def kind(hlo: str, op_name: str) -> str:
  """matmul, copy/transpose, or elementwise/reduce, from one HLO instruction's text."""
  opcode = re.search(r"=\s*\S+\s+([\w-]+)\(", hlo)
  op = opcode.group(1) if opcode else ""
  if op in ("dot", "convolution") or op_name.endswith("dot_general"):
    return "matmul"
  if op in ("copy", "transpose") or op_name.endswith(("transpose", "reshape")):
    return "copy/transpose"
  return "elementwise/reduce"


def instructions(compiled) -> dict[str, tuple[str, str, str]]:
  """HLO instruction name -> (part, kind, the jax op_name of its metadata)."""
  table = {}
  for line in compiled.as_text().splitlines():
    match = re.match(r"\s*(?:ROOT\s+)?%?([\w.-]+)\s*=", line)
    if match:
      found = re.search(r'op_name="([^"]*)"', line)
      op_name = found.group(1) if found else ""
      table[match.group(1)] = (part(op_name), kind(line, op_name), op_name)
  return table


def hlo_op_times(logdir: str, names: set[str]) -> dict[str, float]:
  """Seconds per HLO instruction over the trace. On CPU each thunk of the compiled program is
  an event named by its instruction, on whichever XLA thread ran it (so two threads' events
  can overlap: the total is thread time, which can exceed the wall time)."""
  path = sorted(glob.glob(f"{logdir}/plugins/profile/*/*.xplane.pb"))[-1]
  totals: dict[str, float] = collections.defaultdict(float)
  for plane in ProfileData.from_file(path).planes:
    for line in plane.lines:
      for event in line.events:
        if event.name in names:
          totals[event.name] += event.duration_ns / 1e9
  return totals


def main(argv):
  del argv
  config = FLAGS.config
  if FLAGS.shape:
    common.apply_shape(config, FLAGS.shape)
  s = common.setup(config)
  state, _, _ = parts.init_state(s.model, s.tx, config, s.mesh)
  with jax.set_mesh(s.mesh):
    compiled = s.train_step.lower(state, s.batch).compile()
    state, metrics = compiled(state, s.batch)
    jax.block_until_ready(metrics)
    with jax.profiler.trace(FLAGS.logdir):
      start = time.perf_counter()
      for _ in range(FLAGS.steps):
        state, metrics = compiled(state, s.batch)
      jax.block_until_ready(metrics)
      seconds = (time.perf_counter() - start) / FLAGS.steps
  tokens = config.train.batch_size * config.data.seq_len
  model_flops = flops.train_flops_per_token(s.model_cfg, config.data.seq_len) * tokens
  peak = flops.measure_matmul_peak(size=2048, repeats=5)
  print(
    f"{FLAGS.shape or 'config'}: {seconds * 1e3:.1f} ms/step, {tokens / seconds:,.0f} tokens/s, "
    f"{model_flops / seconds / 1e9:.1f} model GFLOP/s = "
    f"{100 * model_flops / seconds / peak:.0f}% of the measured matmul peak "
    f"({peak / 1e9:.0f} GFLOP/s); trace in {FLAGS.logdir}\n"
  )
  table = instructions(compiled)
  times = hlo_op_times(FLAGS.logdir, set(table))
  total = sum(times.values())
  if not total:
    print("the trace holds no XLA op events (this backend does not record them)")
    return
  kinds = ("matmul", "elementwise/reduce", "copy/transpose")
  cells: dict[tuple[str, str], float] = collections.defaultdict(float)
  for name, t in times.items():
    where, what, _ = table[name]
    cells[where, what] += 1e3 * t / FLAGS.steps
  parts_ = sorted({w for w, _ in cells}, key=lambda w: -sum(cells[w, k] for k in kinds))
  print(f"| part | {' ms | '.join(kinds)} ms | total ms | share |")
  print("|---|" + "---:|" * (len(kinds) + 2))
  for where in parts_ + ["all"]:
    row = [sum(cells[w, k] for w in parts_) if where == "all" else cells[where, k] for k in kinds]
    print(
      f"| {where} | "
      + " | ".join(f"{x:.2f}" for x in row)
      + f" | {sum(row):.2f} | {100 * sum(row) / (1e3 * total / FLAGS.steps):.0f}% |"
    )
  print("\n| HLO op | part | kind | ms/step | share | from |\n|---|---|---|---:|---:|---|")
  for name, t in sorted(times.items(), key=lambda kv: -kv[1])[: FLAGS.top]:
    where, what, op_name = table[name]
    print(
      f"| {name} | {where} | {what} | {1e3 * t / FLAGS.steps:.2f} | {100 * t / total:.1f}% | "
      f"{op_name[-60:]} |"
    )


if __name__ == "__main__":
  app.run(main)
