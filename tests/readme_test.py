"""The README's Cloud TPU commands: each jtrans command in that section is parsed by run.py's own
flags (unknown flags or config keys fail), and the one that can run here runs as written."""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def section(title: str) -> str:
  text = open(os.path.join(ROOT, "README.md")).read()
  start = text.index(f"## {title}\n")
  return text[start : text.index("\n## ", start + 1)]


def run_commands(text: str) -> list[list[str]]:
  """Every `python run.py ...` in the section's code blocks, also inside `--command="..."`."""
  blocks = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
  joined = blocks.replace("\\\n", " ")
  commands = []
  for line in joined.splitlines():
    for match in re.finditer(r"python run\.py([^\"#]*)", line):
      commands.append(["run.py", *shlex.split(match.group(1))])
  return commands


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
  """A benchmarks/ script as the README runs it (PYTHONPATH=.), on one CPU device."""
  return subprocess.run(
    [sys.executable, script, *args],
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
    capture_output=True,
    text=True,
    timeout=600,
  )


PARSE = """
import sys
sys.argv = {argv!r}  # config_flags finds the --config.* overrides in sys.argv when run.py defines them.
import run
from absl import flags
flags.FLAGS({argv!r})
flags.FLAGS.config.to_dict()  # The config file loaded, every override applied.
print("parsed")
"""


def test_every_cloud_tpu_command_parses():
  commands = run_commands(section("Cloud TPU"))
  assert len(commands) >= 3 and any("--distributed" in c for c in commands), commands
  assert any(a.startswith("--workdir=gs://") for c in commands for a in c), commands
  for argv in commands:  # A fresh process each: absl registers override flags once per parse.
    out = subprocess.run(
      [sys.executable, "-c", PARSE.format(argv=argv)],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
      env={**os.environ},
    )
    assert out.returncode == 0 and "parsed" in out.stdout, (argv, out.stderr[-3000:])


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs the libtpu wheel")
def test_the_small_cloud_tpu_compile_runs_as_written():
  """The README's first --mode=compile line (a small Llama on v5p:2x2x1), exactly as shown."""
  command = next(c for c in run_commands(section("Cloud TPU")) if "--mode=compile" in c)
  assert "--topology=v5p:2x2x1" in command
  out = subprocess.run(
    [sys.executable, *command],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ},
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert "lm train step for TPU v5 x 4 (v5p:2x2x1), mesh {'data': 2, 'fsdp': 2" in out.stdout
  assert "device memory 95.000 GiB: the step fits" in out.stdout
  assert re.search(
    r"estimated step [\d.]+ ms \(XLA's cost model\): [\d,]+ tokens/s, MFU", out.stdout
  )


def test_the_import_memory_benchmark_runs_as_shown(tmp_path):
  """The README's import-memory command (tiny size here: the 1.24B directory takes minutes)
  prints its table row with the imported parameter count of the model it wrote."""
  text = section("Hugging Face checkpoints")
  command = re.search(r"`(PYTHONPATH=\. python benchmarks/import_memory\.py)`", text).group(1)
  argv = shlex.split(command.replace("PYTHONPATH=. ", ""))
  out = subprocess.run(
    [sys.executable, *argv[1:], "--size=tiny", f"--dir={tmp_path}"],
    cwd=ROOT,
    env={**os.environ, "PYTHONPATH": ROOT},
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  row = out.stdout.strip().splitlines()[-1]
  # vocab 512 x 64 tied, 2 layers of q,k,v,o (64x64, 32x64 twice, 64x64), 3 MLP 64x128, norms.
  params = 512 * 64 + 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128 + 2 * 64) + 64
  assert row.startswith(f"| Llama {params / 1e9:.2f}B | float32 | unrolled |"), row


def test_the_long_sequence_commands_run_as_shown(tmp_path):
  """The README's "Long sequences" commands: the T=8192 compile as written (its report under
  1 GiB), and the attention and chunked-loss benchmarks at small lengths (their tables, every
  row)."""
  commands = run_commands(section("Long sequences"))
  compile_command = next(c for c in commands if "--mode=compile" in c)
  out = subprocess.run(
    [sys.executable, *compile_command],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=600,
    env={**os.environ},
  )
  assert out.returncode == 0, out.stderr[-3000:]
  total = float(re.search(r"total\s+([\d.]+) GiB", out.stdout).group(1))
  assert total < 1.0, out.stdout
  text = section("Long sequences")
  bench = re.search(r"PYTHONPATH=\. python (benchmarks/attention\.py)", text).group(1)
  # With the GPU check's --impl=auto too (here auto is blockwise, in bfloat16): 5 + 2 rows.
  assert f"PYTHONPATH=. python {bench} --impl=auto" in text
  out = run_benchmark(bench, "--lengths=64", "--repeats=1", "--impl=auto")
  assert out.returncode == 0, out.stderr[-2000:]
  rows = [line for line in out.stdout.splitlines() if line.startswith("| 64 ")]
  assert len(rows) == 7 and all(line.count("|") == 8 for line in rows), out.stdout
  assert sum("| auto |" in line for line in rows) == 2, out.stdout
  assert f"PYTHONPATH=. python {bench} --loss" in text
  out = run_benchmark(bench, "--loss", "--lengths=64")
  assert out.returncode == 0, out.stderr[-2000:]
  rows = [line for line in out.stdout.splitlines() if line.startswith("| 64 ")]
  assert len(rows) == 4 and all(line.count("|") == 5 for line in rows), out.stdout


def test_the_profile_command_runs_as_shown(tmp_path):
  """The README's profile command at the nanoGPT shape: a trace in --logdir and the step's time
  split by part; the matmuls of the MLP and the attention projections take a measured share,
  and the parts add up to the whole."""
  text = section("Throughput")
  bench = "benchmarks/profile_step.py"
  assert f"PYTHONPATH=. python {bench} --shape=4x128" in text
  out = run_benchmark(bench, "--shape=4x128", "--steps=2", f"--logdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-2000:]
  rows = {
    line.split("|")[1].strip(): [float(x) for x in line.split("|")[2:6]]
    for line in out.stdout.splitlines()
    if re.match(r"\| [a-z ]+ \| [\d.]+ \|", line)
  }
  assert rows["mlp"][0] > 0 and rows["attention projections"][0] > 0, out.stdout
  assert rows["optimizer"][1] > 0 and rows["layer norm"][1] > 0, out.stdout
  parts = [v for k, v in rows.items() if k != "all"]
  np.testing.assert_allclose(sum(v[3] for v in parts), rows["all"][3], rtol=1e-2)
  assert list(tmp_path.glob("plugins/profile/*/*.xplane.pb"))


def test_the_pytorch_comparison_runs_as_shown():
  """The README's jtrans-vs-PyTorch command, one short round at the nanoGPT shape: every
  framework's row and the paired ratio, each from its own process."""
  text = section("Throughput")
  bench = "benchmarks/vs_pytorch.py"
  assert f"PYTHONPATH=. python {bench}" in text
  # (Without --torch_compile: a cold inductor compile costs the suite ~40 s.)
  out = run_benchmark(bench, "--shapes=4x128", "--rounds=1", "--steps=2")
  assert out.returncode == 0, out.stderr[-2000:]
  rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| 4x128 |")]
  assert [r[2].strip() for r in rows] == ["jtrans", "torch eager"], out.stdout
  assert all(float(r[3]) > 0 and 0 < float(r[7].strip(" %")) < 200 for r in rows), out.stdout
  assert re.search(r"4x128: jtrans [\d.]+x PyTorch eager's tokens/s", out.stdout), out.stdout


def test_the_decoding_benchmark_runs_as_shown():
  """The README's decoding benchmark commands (the 4 x 256 model and the GPT-2-small case), cut
  to a few tokens and a 2-layer model: every method emits Hugging Face's tokens, and each row
  splits the call into prefill and per-token time."""
  text = section("Decoding")
  bench = "benchmarks/decode_throughput.py"
  assert f"python {bench} --single_thread\n" in text
  assert f"python {bench} --single_thread --size=gpt2_small --nono_cache_row" in text
  out = run_benchmark(
    bench, "--single_thread", "--size=gpt2_small", "--layers=2", "--width=128",
    "--prompt_len=24", "--new_tokens=4", "--repeats=1", "--batch_sizes=2",
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.count("all methods emit the same tokens: True") == 1, out.stdout
  rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| jtrans")]
  assert len(rows) == 2 and all(float(r[5]) > 0 and float(r[6]) > 0 for r in rows), out.stdout
  assert "prompt 24 + 4 new tokens" in out.stdout and "2 x 128" in out.stdout, out.stdout
  assert re.search(r"batch 2: jtrans KV cache [\d.]+x Hugging Face generate", out.stdout)


def test_the_fine_tuning_commands_run_as_shown(tmp_path):
  """The README's LoRA instruction tuning, its generate and its export, as written, on
  tests/chat_test.py's task: a random GPT-2 directory with its own tokenizer and ChatML
  template, and conversations that ask for a digit's name in ten phrasings, one pair per
  phrasing held out. The test adds its size (sequences of 64, batch 8, 400 steps) and, since a
  random base needs more than the recipe's LoRA, adapters on every projection at lr 1e-2.

  Measured: the base names 0 of the 10 held-out digits; the tuned model names 9 (the test asks
  for at least 7 and at most 1 before). The export is the merged model, and its PEFT adapter
  on the base gives the merged model's logits."""
  import torch
  import transformers

  from tests.chat_test import make_chat_task

  commands = run_commands(section("Fine-tuning"))
  config = "--config=configs/finetune.py:path/to/model,lora"
  assert len(commands) == 3 and all(config in c for c in commands), commands
  assert "--mode=generate" in commands[1] and "--mode=export" in commands[2], commands
  task = make_chat_task(str(tmp_path))
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("".join(prompt + "\n" for prompt, _ in task["held_out"]))
  size = [
    "--config.data.seq_len=64",
    "--config.train.batch_size=8",
    "--config.train.steps=400",
    "--config.train.log_every=100",
    "--config.train.eval_every=400",
    "--config.train.checkpoint_every=400",
    "--config.optim.lr=1e-2",
    "--config.finetune.lora_targets=attention/(query|key|value|out)$|mlp/(wi|wo)$",
    "--config.sample.num_samples=0",
    "--config.sample.length=8",  # The prompt and reply fit the 64 positions.
  ]

  def run(argv, *extra):
    argv = [a.replace("path/to/model", task["dir"]) for a in argv]
    argv = [
      a.replace("runs/", f"{tmp_path}/").replace("=chat/", f"={tmp_path}/chat/") for a in argv
    ]
    argv = [f"--prompt_file={prompts}" if a.startswith("--prompt=") else a for a in argv]
    out = subprocess.run(
      [sys.executable, *argv, *extra],
      cwd=ROOT,
      env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
      capture_output=True,
      text=True,
      timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout

  def named(stdout):
    replies = re.findall(r"^--- \d+: .*\n(.*)$", stdout, re.M)
    assert len(replies) == len(task["held_out"]), stdout
    return sum(r.strip() == word for r, (_, word) in zip(replies, task["held_out"]))

  trained = run(commands[0], *size)
  # 2 blocks x 6 projections x rank 8 x (fan-in + fan-out).
  assert "fine-tuning (lora): 18,432 of " in trained, trained[-3000:]
  before = named(run(commands[1], *size, f"--hf_dir={task['dir']}"))
  after = named(run(commands[1], *size))
  print(f"held-out digits named: {before} of 10 by the base, {after} after tuning")
  assert before <= 1 and after >= 7, (before, after)
  run(commands[2], *size)
  base = transformers.GPT2LMHeadModel.from_pretrained(task["dir"]).eval()
  merged = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "chat_lora_merged"))
  tokens = torch.tensor(np.random.default_rng(0).integers(0, 300, (1, 16)))
  with torch.no_grad():
    difference = (merged(tokens).logits - base(tokens).logits).abs().max().item()
  assert difference > 1e-4, difference
  # The export's PEFT adapter on the base is the merged model. The run held its frozen base in
  # bfloat16 (frozen_dtype), so that is the base the adapter goes on.
  import peft

  with torch.no_grad():
    for p in base.parameters():
      p.copy_(p.bfloat16().float())
  adapted = peft.PeftModel.from_pretrained(base, str(tmp_path / "chat_lora_merged" / "adapter"))
  with torch.no_grad():
    gap = (adapted.eval()(tokens).logits - merged(tokens).logits).abs().max().item()
  assert gap < 1e-4, gap


def test_the_fine_tuning_benchmark_runs_as_shown():
  """The README's fine-tuning benchmark command (a tiny model here): its five rows, LoRA
  holding a sliver of full fine-tuning's optimizer state, prefix tuning less than full and
  prompt tuning less than LoRA."""
  text = section("Fine-tuning")
  command = re.search(r"`PYTHONPATH=\. python (benchmarks/finetune_memory\.py)`", text).group(1)
  out = run_benchmark(
    command,
    "--config=configs/lm.py:tiny",
    "--config.model.num_layers=2",
    "--steps=1",
    "--seq_len=32",
  )
  assert out.returncode == 0, out.stderr[-2000:]
  rows = {
    r.split("|")[1].strip(): r.split("|") for r in out.stdout.splitlines() if r.startswith("| ")
  }
  mib = lambda row: float(row[5].split()[0].replace(",", ""))  # noqa: E731
  prefix = "prefix P=16, MLP 512"
  assert set(rows) >= {"full", "LoRA r=8 q,v", "LoRA r=8 q,v, bf16 base", prefix}, out.stdout
  assert mib(rows["LoRA r=8 q,v"]) < mib(rows["full"]) / 10
  assert mib(rows[prefix]) < mib(rows["full"])
  assert mib(rows["prompt P=16"]) < mib(rows["LoRA r=8 q,v"])


def test_the_hyperparameter_transfer_commands_parse_and_the_coordinate_check_runs(
  data_dir, tmp_path
):
  """The "Hyperparameter transfer and evaluation" section: each run.py command parses with
  run.py's own flags, and the coordinate check runs as written, at widths 64 and 256 for 4
  steps (3 seeds each): under muP every layer's mean |x| stays within 2x across the widths at
  every step; under standard parametrisation some layer grows by more than 3x. It prints its
  table and writes its plot. tests/harness_test.py runs the harness command."""
  from jtrans.scaling import coord_check

  commands = run_commands(section("Hyperparameter transfer and evaluation"))
  assert {"--mode=coord_check", "--mode=analyze"} <= {a for c in commands for a in c}, commands
  for argv in commands:
    out = subprocess.run(
      [sys.executable, "-c", PARSE.format(argv=argv)], cwd=ROOT, capture_output=True, text=True,
      timeout=120, env={**os.environ},
    )  # fmt: skip
    assert out.returncode == 0 and "parsed" in out.stdout, (argv, out.stderr[-3000:])
  check = next(c for c in commands if "--mode=coord_check" in c)
  check = [a if not a.startswith("--workdir=") else f"--workdir={tmp_path}" for a in check]
  out = subprocess.run(
    [sys.executable, *check, "--widths=64,256", "--config.train.steps=4",
     f"--config.data.data_dir={data_dir}"],
    cwd=ROOT, capture_output=True, text=True, timeout=600,
    env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"},
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-3000:]
  assert "coordinate check, widths [64, 256], 4 steps, 3 seeds" in out.stdout, out.stdout
  assert re.search(r"decoder/block_1/mlp\s+[\d.]+\s+[\d.]+", out.stdout), out.stdout
  assert (tmp_path / "coord_check.png").read_bytes()[:4] == b"\x89PNG"
  recorded = json.loads((tmp_path / "coord_check.json").read_text())
  results = {name: {int(w): s for w, s in r.items()} for name, r in recorded.items()}
  assert coord_check.flat_enough(results["mup"], 2.0), coord_check.growth(results["mup"])
  assert max(coord_check.growth(results["standard"]).values()) > 3.0
