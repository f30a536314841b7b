"""Peak resident memory of importing a Hugging Face Llama directory into the run's sharded layout.

  PYTHONPATH=. python benchmarks/import_memory.py               # ~1.2B Llama (Llama-3.2-1B shape)
  PYTHONPATH=. python benchmarks/import_memory.py --size=tiny   # seconds, for a smoke run

Writes a randomly initialised LlamaForCausalLM directory (config.json + model.safetensors, the
layout save_pretrained writes) in one process, then imports it in a fresh one the way
`config.train.init_from` does (configs/hf.py reads the architecture, `pretrained.import_params`
reads, casts and places the weights on the mesh) and prints the peak RSS beside the file size.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags

SIZES = {  # Llama-3.2-1B's shape (tied embeddings, grouped-query attention) and a toy one.
  "1b": dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
  ),
  "tiny": dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
  ),
}
flags.DEFINE_enum("size", "1b", list(SIZES), "Model shape.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Stored and imported dtype.")
flags.DEFINE_string("dir", None, "Reuse (or write) the directory here instead of a tempdir.")
flags.DEFINE_bool("scan_layers", False, "Import into the scanned layout (stacks the layers).")
flags.DEFINE_string("_measure", None, "Internal: import this directory and print JSON.")
FLAGS = flags.FLAGS


def write_directory(directory: str, size: str, dtype: str) -> None:
  import ml_dtypes
  import numpy as np
  import safetensors.numpy

  shape = SIZES[size]
  config = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": dtype,
    **shape,
  }
  d, f, h = shape["hidden_size"], shape["intermediate_size"], shape["num_attention_heads"]
  kv = d // h * shape["num_key_value_heads"]
  shapes = {"model.embed_tokens.weight": (shape["vocab_size"], d), "model.norm.weight": (d,)}
  for i in range(shape["num_hidden_layers"]):
    p = f"model.layers.{i}"
    shapes.update(
      {
        f"{p}.self_attn.q_proj.weight": (d, d),
        f"{p}.self_attn.k_proj.weight": (kv, d),
        f"{p}.self_attn.v_proj.weight": (kv, d),
        f"{p}.self_attn.o_proj.weight": (d, d),
        f"{p}.mlp.gate_proj.weight": (f, d),
        f"{p}.mlp.up_proj.weight": (f, d),
        f"{p}.mlp.down_proj.weight": (d, f),
        f"{p}.input_layernorm.weight": (d,),
        f"{p}.post_attention_layernorm.weight": (d,),
      }
    )
  rng, store = np.random.default_rng(0), {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
  tensors = {
    k: (rng.standard_normal(s, np.float32) * 0.02).astype(store[dtype]) for k, s in shapes.items()
  }
  os.makedirs(directory, exist_ok=True)
  safetensors.numpy.save_file(
    tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"}
  )
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)


def rss_bytes() -> int:
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def measure(directory: str) -> None:
  """Runs in a fresh process: the import alone, as a run's start does it."""
  import jax
  import numpy as np

  from configs import hf as hf_config
  from jtrans import parts
  from jtrans.hf import pretrained

  config = hf_config.get_config(directory)
  config.model.param_dtype = FLAGS.dtype
  config.model.scan_layers = FLAGS.scan_layers
  layout = parts.build_layout(config)  # Reads no data: the random directory has no tokenizer.
  jax.block_until_ready(jax.device_put(np.zeros(8)))
  before, start = rss_bytes(), time.perf_counter()
  params = pretrained.import_params(
    directory, layout.model_cfg, layout.abstract.params, layout.shardings.params
  )
  jax.block_until_ready(params)
  seconds = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  count = sum(x.size for x in jax.tree.leaves(params))
  print(
    json.dumps(
      {
        "params": count,
        "before": before,
        "peak": peak,
        "seconds": seconds,
        "devices": len(layout.mesh.devices.flat),
      }
    )
  )


def main(_):
  if FLAGS._measure:
    return measure(FLAGS._measure)
  directory = FLAGS.dir or tempfile.mkdtemp(prefix="jtrans-import-")
  if not os.path.exists(os.path.join(directory, "model.safetensors")):
    start = time.perf_counter()
    write_directory(directory, FLAGS.size, FLAGS.dtype)
    print(f"wrote {directory} in {time.perf_counter() - start:.0f} s")
  file_bytes = os.path.getsize(os.path.join(directory, "model.safetensors"))
  out = subprocess.run(
    [
      sys.executable,
      __file__,
      f"--_measure={directory}",
      f"--dtype={FLAGS.dtype}",
      f"--scan_layers={FLAGS.scan_layers}",
    ],
    capture_output=True,
    text=True,
    env={**os.environ},
  )
  if out.returncode:
    sys.exit(out.stderr[-3000:])
  r = json.loads(out.stdout.strip().splitlines()[-1])
  gib = 2**30
  print(
    "| model | dtype | layout | devices | safetensors | RSS before | peak RSS | peak / file "
    "| import growth / file | seconds |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  print(
    f"| Llama {r['params'] / 1e9:.2f}B | {FLAGS.dtype} | "
    f"{'scanned' if FLAGS.scan_layers else 'unrolled'} | {r['devices']} | "
    f"{file_bytes / gib:.2f} GiB | {r['before'] / gib:.2f} GiB | {r['peak'] / gib:.2f} GiB | "
    f"{r['peak'] / file_bytes:.2f}x | {(r['peak'] - r['before']) / file_bytes:.2f}x | "
    f"{r['seconds']:.1f} |"
  )


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  app.run(main)
