"""jtrans's train step against the same GPT in PyTorch, on this machine, in one run.

  PYTHONPATH=. python benchmarks/vs_pytorch.py                       # both shapes, 3 rounds
  PYTHONPATH=. python benchmarks/vs_pytorch.py --shapes=4x128 --rounds=2 --torch_compile

The PyTorch model is Hugging Face's GPT2LMHeadModel at the shape of jtrans's decoder
(configs/lm.py with benchmarks/common.SHAPES: learned positions, pre-LayerNorm, tanh GELU,
biases, tied embeddings, byte vocabulary, no dropout) with torch.optim.AdamW and the same
global-norm clipping; both take float32 and the same synthetic batch shape. Each round runs
every framework in its own process (so neither inherits the other's threads or caches),
alternating, and each process also times its own library's float32 matmul at 2048x2048: the
"% of peak" column is model FLOPs (jtrans.flops, the same count for both) over that peak. The
ratio is jtrans's tokens/s over PyTorch eager's, the median of the rounds' paired ratios.
"""

import json
import statistics
import subprocess
import sys
import time

import common  # noqa: E402  (benchmarks/common.py; puts the project root on sys.path)
from absl import app, flags

flags.DEFINE_list("shapes", list(common.SHAPES), "Benchmark shapes (benchmarks/common.SHAPES).")
flags.DEFINE_integer("rounds", 3, "Alternating rounds (one process per framework each).")
flags.DEFINE_integer("steps", 0, "Timed steps per process (0: about 10 s of work per shape).")
flags.DEFINE_bool("torch_compile", False, "Also time the PyTorch model under torch.compile.")
flags.DEFINE_string("worker", "", "Internal: run one framework's measurement and print JSON.")
flags.DEFINE_string("shape", "", "Internal: the worker's shape.")
FLAGS = flags.FLAGS

DEFAULT_STEPS = {"6x512": 4, "4x128": 60}


def _config(shape: str):
  from configs import lm

  config = lm.get_config("tiny")
  common.apply_shape(config, shape)
  return config


def jax_worker(shape: str, steps: int) -> dict:
  import jax

  from jtrans import flops, parts

  config = _config(shape)
  s = common.setup(config)
  state, _, _ = parts.init_state(s.model, s.tx, config, s.mesh)
  with jax.set_mesh(s.mesh):
    seconds, _ = common.seconds_per_step(s.train_step, state, s.batch, steps)
  return {"seconds": seconds, "peak": flops.measure_matmul_peak(size=2048, repeats=5)}


def torch_worker(shape: str, steps: int, compiled: bool) -> dict:
  import torch
  import transformers

  layers, width, heads, context, batch = common.SHAPES[shape]
  config = _config(shape)
  gpt = transformers.GPT2Config(
    vocab_size=config.model.vocab_size,
    n_positions=context,
    n_embd=width,
    n_layer=layers,
    n_head=heads,
    n_inner=4 * width,
    activation_function="gelu_new",
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    tie_word_embeddings=True,
  )
  model = transformers.GPT2LMHeadModel(gpt)
  model.train()
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-8)
  forward = torch.compile(model) if compiled else model
  tokens = torch.randint(3, 259, (batch, context))
  targets = torch.randint(3, 259, (batch, context))

  def step():
    logits = forward(input_ids=tokens).logits
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()

  step()
  seconds = _seconds(lambda: [step() for _ in range(steps)]) / steps
  a = torch.ones(2048, 2048)
  torch.matmul(a, a)
  peak = 2 * 2048**3 / min(_seconds(lambda: torch.matmul(a, a)) for _ in range(5))
  return {"seconds": seconds, "peak": peak}


def _seconds(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def measure(framework: str, shape: str) -> dict:
  steps = FLAGS.steps or DEFAULT_STEPS.get(shape, 10)
  out = subprocess.run(
    [sys.executable, __file__, f"--worker={framework}", f"--shape={shape}", f"--steps={steps}"],
    capture_output=True,
    text=True,
    check=False,
  )
  if out.returncode:
    raise RuntimeError(f"{framework} at {shape} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if FLAGS.worker:
    if FLAGS.worker == "jtrans":
      result = jax_worker(FLAGS.shape, FLAGS.steps)
    else:
      result = torch_worker(FLAGS.shape, FLAGS.steps, FLAGS.worker == "torch.compile")
    print(json.dumps(result))
    return
  from jtrans import flops
  from jtrans.models import ModelConfig

  frameworks = ["jtrans", "torch eager"] + (["torch.compile"] if FLAGS.torch_compile else [])
  print(
    "| shape | framework | ms/step | tokens/s | model GFLOP/s | matmul peak GFLOP/s | % of peak |"
  )
  print("|---|---|---:|---:|---:|---:|---:|")
  ratios = {}
  for shape in FLAGS.shapes:
    config = _config(shape)
    tokens = config.train.batch_size * config.data.seq_len
    model_flops = tokens * flops.train_flops_per_token(
      ModelConfig.from_config(config.model), config.data.seq_len
    )
    results = {f: [] for f in frameworks}
    for _ in range(FLAGS.rounds):
      for framework in frameworks:
        results[framework].append(measure(framework, shape))
    for framework, rows in results.items():
      seconds = statistics.median(r["seconds"] for r in rows)
      peak = statistics.median(r["peak"] for r in rows)
      print(
        f"| {shape} | {framework} | {1e3 * seconds:.1f} | {tokens / seconds:,.0f} | "
        f"{model_flops / seconds / 1e9:.1f} | {peak / 1e9:.0f} | "
        f"{100 * model_flops / seconds / peak:.0f}% |",
        flush=True,
      )
    paired = [
      t["seconds"] / j["seconds"] for j, t in zip(results["jtrans"], results["torch eager"])
    ]
    ratios[shape] = statistics.median(paired)
  for shape, ratio in ratios.items():
    print(f"{shape}: jtrans {ratio:.2f}x PyTorch eager's tokens/s (median of paired rounds)")


if __name__ == "__main__":
  app.run(main)
