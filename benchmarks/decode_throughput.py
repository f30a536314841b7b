"""Greedy decoding throughput of one GPT-2-shaped model: jtrans with the KV cache, jtrans
re-running the full forward pass each step (no cache), and Hugging Face PyTorch `generate`.

  python benchmarks/decode_throughput.py --single_thread
  python benchmarks/decode_throughput.py --single_thread --size=gpt2_small

The model is a random GPT2LMHeadModel (default 4 layers x 256, vocabulary 50257: 16.4M
parameters, 16-token prompts; `--size=gpt2_small`: 12 x 768, 124M parameters, 512-token
prompts), saved and imported with jtrans.hf, so all methods run the same weights; the script
checks that they emit the same tokens. tokens/s counts generated tokens (batch x new_tokens)
over the wall time of a whole call, prefill included, after a warm-up call; ms/step is that
time per generated position. The whole call splits into "prefill ms" (a call that generates
one token: the prompt's forward pass) and "ms/token" (each further token: the difference
between the full call and the one-token call, over new_tokens - 1). "compile s" is the first
call's extra time (jit compilation; torch has none). EOS is disabled so every row runs the
full length. The last lines give jtrans-with-cache over Hugging Face per batch size.
"""

import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "--single_thread" in sys.argv:
  # Before JAX and torch start (absl parses later). XLA's CPU flags (xla_cpu_multi_thread_eigen,
  # intra_op_parallelism_threads) leave jax 0.10 using every core (measured: 2 cores' CPU time
  # per wall second); pinning the process to one core does hold both libraries to one.
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import common  # noqa: E402, F401  (benchmarks/common.py; puts the project root on sys.path)
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from absl import app, flags  # noqa: E402

from jtrans import decoding, hf  # noqa: E402
from jtrans.models import build_model  # noqa: E402

SIZES = {  # name: (layers, width, prompt_len)
  "4x256": (4, 256, 16),
  "gpt2_small": (12, 768, 512),
}
flags.DEFINE_enum(
  "size", None, list(SIZES), "Sets --layers, --width and --prompt_len (unless given)."
)
flags.DEFINE_list("batch_sizes", ["1", "8"], "Rows decoded together.")
flags.DEFINE_integer("prompt_len", 16, "Prompt tokens per row.")
flags.DEFINE_integer("new_tokens", 64, "Tokens generated per row.")
flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (after the warm-up call).")
flags.DEFINE_integer("layers", 4, "GPT-2 blocks.")
flags.DEFINE_integer("width", 256, "GPT-2 n_embd (heads: width / 64).")
flags.DEFINE_integer("vocab", 50257, "Vocabulary size.")
flags.DEFINE_bool(
  "no_cache_row",
  True,
  "Also time jtrans re-running the whole forward pass per token (slow at long prompts).",
)
flags.DEFINE_bool(
  "single_thread",
  False,
  "One CPU thread for XLA and torch: steadier numbers on "
  "a machine shared with other jobs (spinning thread pools suffer most there).",
)
FLAGS = flags.FLAGS


def timed(fn) -> tuple[float, float, np.ndarray]:
  """(compile seconds, seconds per call, output) of `fn()` returning tokens."""
  start = time.perf_counter()
  out = np.asarray(fn())
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(FLAGS.repeats):
    out = np.asarray(fn())
  seconds = (time.perf_counter() - start) / FLAGS.repeats
  return max(first - seconds, 0.0), seconds, out


def measure(generate) -> dict:
  """Times `generate(new_tokens)` at FLAGS.new_tokens and at 1 (the prefill's share)."""
  compile_s, seconds, tokens = timed(lambda: generate(FLAGS.new_tokens))
  _, prefill_s, _ = timed(lambda: generate(1))
  per_token_s = (seconds - prefill_s) / max(FLAGS.new_tokens - 1, 1)
  return dict(
    seconds=seconds, prefill=prefill_s, per_token=per_token_s, compile=compile_s, out=tokens
  )


def main(argv):
  del argv
  for name, value in zip(
    ("layers", "width", "prompt_len"), SIZES[FLAGS.size] if FLAGS.size else ()
  ):
    if not FLAGS[name].present:  # A flag given explicitly wins over the size's.
      FLAGS[name].value = value
  if FLAGS.single_thread:
    torch.set_num_threads(1)
  torch.manual_seed(0)
  hf_model = transformers.GPT2LMHeadModel(
    transformers.GPT2Config(
      vocab_size=FLAGS.vocab,
      n_positions=1024,
      n_embd=FLAGS.width,
      n_layer=FLAGS.layers,
      n_head=FLAGS.width // 64,
    )
  ).eval()
  hf_model.generation_config.eos_token_id = None  # Every row runs the full length.
  hf_model.generation_config.pad_token_id = 0
  with tempfile.TemporaryDirectory() as directory:
    hf_model.save_pretrained(directory, safe_serialization=True)
    cfg, params = hf.load_pretrained(directory)
  model = build_model(cfg)
  params = jax.device_put(params)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(
    f"device: {jax.devices()[0].device_kind}; CPU cores: {len(os.sched_getaffinity(0))}; "
    f"torch threads: {torch.get_num_threads()}; "
    f"GPT-2 {FLAGS.layers} x {FLAGS.width}, vocab {FLAGS.vocab}: {n_params / 1e6:.1f}M "
    f"parameters; prompt {FLAGS.prompt_len} + {FLAGS.new_tokens} new tokens, greedy\n"
  )

  rows, ratios = [], []
  for batch in map(int, FLAGS.batch_sizes):
    prompts = np.random.default_rng(batch).integers(0, FLAGS.vocab, (batch, FLAGS.prompt_len))
    lengths = np.full(batch, FLAGS.prompt_len)
    methods = [("jtrans, KV cache", True)] + [("jtrans, no cache", False)] * FLAGS.no_cache_row
    results = {}
    for name, use_cache in methods:
      results[name] = measure(
        lambda n, prompts=prompts, lengths=lengths, use_cache=use_cache: (
          decoding.generate(
            model, params, prompts, lengths, max_new_tokens=n, use_cache=use_cache
          ).tokens
        )
      )
    with torch.inference_mode():
      theirs = measure(
        lambda n, prompts=prompts: hf_model.generate(
          torch.tensor(prompts),
          attention_mask=torch.ones(prompts.shape),
          do_sample=False,
          max_new_tokens=n,
          use_cache=True,
        )[:, FLAGS.prompt_len :]
      )
    theirs["compile"] = None
    results["HF PyTorch generate, use_cache"] = theirs
    agree = all(np.array_equal(theirs["out"], r["out"]) for r in results.values())
    print(f"batch {batch}: all methods emit the same tokens: {agree}")
    rows += [(name, batch, r) for name, r in results.items()]
    ours = results["jtrans, KV cache"]
    ratios.append(
      f"batch {batch}: jtrans KV cache {theirs['seconds'] / ours['seconds']:.2f}x Hugging Face "
      f"generate's tokens/s (prefill {theirs['prefill'] / ours['prefill']:.2f}x, "
      f"per token {theirs['per_token'] / ours['per_token']:.2f}x)"
    )

  print("\n| decoding | batch | tokens/s | ms/step | prefill ms | ms/token | compile s |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for name, batch, r in rows:
    compile_cell = "-" if r["compile"] is None else f"{r['compile']:.1f}"
    print(
      f"| {name} | {batch} | {batch * FLAGS.new_tokens / r['seconds']:,.0f} "
      f"| {1000 * r['seconds'] / FLAGS.new_tokens:.2f} | {1000 * r['prefill']:.1f} "
      f"| {1000 * r['per_token']:.2f} | {compile_cell} |"
    )
  print("\n" + "\n".join(ratios))


if __name__ == "__main__":
  app.run(main)
