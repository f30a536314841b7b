"""What each `run.py --mode` does, as functions of a config and paths that tests call directly.

run.py only parses flags and dispatches here. Each function returns what the mode prints.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import ml_collections

from jtrans import storage


def start_jax(
  compilation_cache_dir: str,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  distributed: bool = False,
) -> None:
  """Before any computation: join a multi-host run (`distributed`; on Cloud TPU and under SLURM
  jax finds the coordinator itself, elsewhere pass its address) and point JAX's persistent
  compilation cache at `compilation_cache_dir` (local or gs://; "" turns it off). Programs that
  compile in under jax_persistent_cache_min_compile_time_secs (1 s) are not stored."""
  import jax  # pylint: disable=g-import-not-at-top

  if distributed or coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  path = compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path) if path else None)


def train(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """--mode=train: trains (resuming), then returns `config.sample.num_samples` samples (on
  process 0; none for models that do not continue text)."""
  import jax

  from jtrans import parts
  from jtrans import train as training

  began = time.perf_counter()
  run = parts.build(config)  # Once, for training and the samples.
  state = training.train(config, workdir, run=run, began=began)
  if not config.sample.num_samples or jax.process_index() != 0:
    return []
  if run.layout.model_cfg.family == "dit":  # A grid of every class (and its score).
    classes = range(run.layout.model_cfg.num_classes)
    step = int(jax.device_get(state.step))
    return [draw_images(config, run.layout.model_cfg, state.params, classes, workdir, step)]
  began = time.perf_counter()
  samples = training.sample_text(run, state.params)
  print(f"time: sampling {time.perf_counter() - began:.1f}s (compile included)", flush=True)
  return samples


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> str:
  """--mode=eval: the latest checkpoint's eval-split metrics, as JSON."""
  from jtrans import train as training

  return json.dumps(training.evaluate_checkpoint(config, workdir), indent=2)


def compile_step(config: ml_collections.ConfigDict, topology: str | None) -> str:
  """--mode=compile: the train step compiled for config.mesh or a TPU `topology`, reported."""
  if topology:
    import jax

    # The slice is described by libtpu alone; the host's own backend stays the CPU, so the
    # check also runs beside a job that holds this machine's TPU (and libtpu's lock file).
    jax.config.update("jax_platforms", "cpu")
  from jtrans import aot

  return aot.format_report(aot.compile_report(config, topology))


def plan(config: ml_collections.ConfigDict, flops: float | None, tokens_per_param: float) -> str:
  """--mode=plan: the config's parameter and FLOP counts, or the ladder rungs for `flops`."""
  from jtrans.scaling import planner

  if flops is None:
    return planner.format_config(config)
  from configs import ladder

  return planner.format_budget(flops, ladder.rungs(), tokens_per_param)


def analyze(workdir: str, bootstrap_samples: int) -> str:
  """--mode=analyze: scaling-law fits and plots of the sweep in `workdir`; for a learning rate
  x width (or depth) sweep, the optimum per size and its drift (scaling/transfer.py)."""
  from jtrans.scaling import report, transfer

  if transfer.applies(workdir):
    return transfer.analyze(workdir)
  return report.analyze(workdir, bootstrap_samples=bootstrap_samples)


def coord_check(config: ml_collections.ConfigDict, widths: Sequence[int], workdir: str) -> str:
  """--mode=coord_check: each layer's activation scale against width after a few steps, under
  standard parametrisation and the config's (scaling/coord_check.py); a plot in `workdir`."""
  from jtrans.scaling import coord_check as check

  return check.run(config, widths, workdir)


def read_prompts(prompts: Sequence[str], prompt_file: str | None) -> list[str]:
  """--prompt values (each may hold several, separated by '|') and --prompt_file's lines."""
  found = [p for flag in prompts for p in flag.split("|")]
  if prompt_file:
    found += [line for line in storage.path(prompt_file).read_text().splitlines() if line.strip()]
  return found


def tokenizer_dir(hf_dir: str) -> str:
  """Where --mode=generate --hf_dir finds the tokenizer: the directory, or a PEFT adapter's
  base directory."""
  from jtrans.finetune import peft as peft_files

  return peft_files.base_of(hf_dir) if peft_files.is_adapter(hf_dir) else hf_dir


def restore_params(config: ml_collections.ConfigDict, workdir: str, merged: bool = True) -> Any:
  """The parameters of the workdir's latest checkpoint, on this host's mesh: as the model runs
  on them (LoRA merged, a prefix or soft prompt in place: what generation and export take), or
  with `merged=False` as trained (adapters under their own keys)."""
  from jtrans import finetune, parts
  from jtrans import train as training

  layout = parts.build_layout(config)  # Reads weights, not the data set.
  params = training.restore_latest(config, workdir, layout.abstract)[0].params
  return finetune.model_params(params, layout.tuning, layout.model) if merged else params


def class_ids(prompts: Sequence[str], num_classes: int) -> list[int]:
  """--mode=generate's prompts for a DiT: class ids in [0, num_classes)."""
  classes = [int(p) if p.strip().isdigit() else -1 for p in prompts]
  if not all(0 <= c < num_classes for c in classes):
    raise ValueError(
      f"--mode=generate with a DiT: each --prompt is a class id in [0, {num_classes}), "
      f"got {list(prompts)}."
    )
  return classes


def draw_images(
  config: ml_collections.ConfigDict,
  model_cfg: Any,
  params: Any,
  classes: Sequence[int],
  workdir: str,
  record_step: int | None = None,
) -> str:
  """A DiT's `config.sample.num_samples` images of each class in `classes`, drawn as
  config.sample says (sampler, guidance, diffusion_steps) and written as one PNG grid to
  `<workdir>/samples.png` (a row per class). With config.sample.classifier (the workdir of an
  image classifier run, e.g. experiments/vit_digits), the classifier labels every image and
  the share labelled as its class is reported (and, with `record_step`, written to
  metrics.jsonl at that step as split "samples", metric "sample_accuracy")."""
  import io

  import jax
  import numpy as np
  from PIL import Image

  from jtrans import diffusion, metrics, objectives
  from jtrans.models import build_model

  s, d = config.sample, config.data
  labels = np.repeat(np.asarray(classes, np.int32), s.num_samples)
  noising = objectives.Noising.from_config(config)
  began = time.perf_counter()
  images = diffusion.generate(
    build_model(model_cfg),
    params,
    labels,
    jax.random.key(config.seed + 3),
    noising.schedule,
    (model_cfg.image_size, model_cfg.image_size, model_cfg.num_channels),
    null_label=noising.null_label,
    guidance=s.guidance,
    sampler=s.sampler,
    steps=s.diffusion_steps,
  )
  mean, std = np.asarray(d.image_mean, np.float32), np.asarray(d.image_std, np.float32)
  pixels = np.clip(np.round((np.asarray(images) * std + mean) * 255), 0, 255).astype(np.uint8)
  picture = diffusion.grid(pixels, rows=len(classes))
  path = storage.path(workdir) / "samples.png"
  buffer = io.BytesIO()
  Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(buffer, "PNG")
  storage.write_bytes(path, buffer.getvalue())
  seconds = time.perf_counter() - began
  text = f"wrote {path}: {s.num_samples} samples of each of {len(classes)} classes, a row per class ({s.sampler}, guidance {s.guidance}; {seconds:.1f}s)"
  if not s.classifier:
    return text
  predicted = classify(s.classifier, pixels)
  accuracy = float(np.mean(predicted == labels))
  if record_step is not None:
    writer = metrics.MetricsWriter(workdir)
    writer.write(record_step, "samples", {"sample_accuracy": accuracy})
    writer.close()
  return f"{text}\n{s.classifier} labels {accuracy:.3f} of the samples as their class"


def classify(classifier_workdir: str, pixels: Any) -> Any:
  """The labels that the image classifier trained in `classifier_workdir` (its config.json
  and latest checkpoint) gives uint8 images `[count, h, w, c]`, processed as its evaluation
  processes images."""
  import jax
  import numpy as np

  from jtrans.data import images
  from jtrans.models import build_model

  recorded = json.loads((storage.path(classifier_workdir) / "config.json").read_text())
  clf_config = ml_collections.ConfigDict(recorded)
  if clf_config.loss.objective != "classification":
    raise ValueError(
      f"config.sample.classifier={classifier_workdir!r} is a {clf_config.loss.objective!r} run; "
      "point it at an image classification run's workdir (e.g. experiments/vit_digits)."
    )
  params = restore_params(clf_config, classifier_workdir)
  model = build_model(clf_config.model)
  batch = images.model_inputs(pixels, images.ImageOptions.from_config(clf_config))
  logits = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, batch)
  return np.asarray(jax.device_get(logits)).argmax(-1)


def generate(
  config: ml_collections.ConfigDict,
  prompts: Sequence[str],
  workdir: str | None,
  hf_dir: str | None,
  max_new_tokens: int | None = None,
  num_beams: int | None = None,
) -> list[str]:
  """--mode=generate: each prompt's continuation (decoder) or output (encoder-decoder), from
  the workdir's latest checkpoint or a Hugging Face directory's weights (whose own tokenizer
  the caller puts in config.data), sampled or searched as config.sample says."""
  import jax
  import numpy as np

  from jtrans import decoding, hf, parts
  from jtrans.data import chat
  from jtrans.decoding import beam_search
  from jtrans.finetune import peft as peft_files
  from jtrans.models import ModelConfig, build_model

  if hf_dir and peft_files.is_adapter(hf_dir):  # A PEFT LoRA adapter on its base directory.
    model_cfg, params = peft_files.load_adapted(hf_dir)
  elif hf_dir:
    model_cfg, params = hf.load_pretrained(hf_dir)
  else:
    model_cfg, params = ModelConfig.from_config(config.model), restore_params(config, workdir)
  if model_cfg.family == "dit":  # Each prompt a class id; one grid, a row per class.
    classes = class_ids(prompts, model_cfg.num_classes)
    text = draw_images(config, model_cfg, params, classes, workdir or hf_dir)
    return [text] + [f"(row {i + 1} of the same grid)" for i in range(1, len(classes))]
  tok = parts.make_tokenizer(config)
  if model_cfg.vocab_size < tok.vocab_size:
    raise ValueError(
      f"the {config.data.tokenizer!r} tokenizer has {tok.vocab_size} ids but the "
      f"model {model_cfg.vocab_size}; set config.data.tokenizer (and tokenizer_path) "
      "to the tokenizer the model was trained with."
    )
  s, model = config.sample, build_model(model_cfg)
  beams = num_beams if num_beams is not None else s.num_beams
  # Chat: each prompt a user's turn.
  prompt_ids, eos_id = chat.prompts(chat.format_of(config.data, tok), tok, prompts)
  common = dict(max_new_tokens=max_new_tokens or s.length, eos_id=eos_id, pad_id=tok.pad_id)
  beam = dict(
    num_beams=beams, length_penalty=s.length_penalty, length_penalty_style=s.length_penalty_style
  )
  sampling = dict(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
  rng = jax.random.key(config.seed)
  if model_cfg.family == "encoder_decoder":
    # As the seq2seq pipeline (and Marian) feed it: the source ends with EOS, padded on the
    # right; decoding starts from the pad id.
    rows = [list(tok.encode(p)) + [tok.eos_id] for p in prompts]
    source = np.full((len(rows), max(map(len, rows))), tok.pad_id, np.int32)
    mask = np.zeros_like(source)
    for i, row in enumerate(rows):
      source[i, : len(row)], mask[i, : len(row)] = row, 1
    if beams > 1:
      out = beam_search.beam_search_seq2seq(
        model, params, source, mask, start_id=tok.pad_id, **common, **beam
      )
    else:
      out = decoding.generate_seq2seq(
        model, params, source, mask, rng, start_id=tok.pad_id, **common, **sampling
      )
  elif model_cfg.family == "decoder":
    tokens, lengths = decoding.left_pad([list(p) for p in prompt_ids], tok.pad_id)
    if beams > 1:
      out = beam_search.beam_search(model, params, tokens, lengths, **common, **beam)
    else:
      out = decoding.generate(model, params, tokens, lengths, rng, **common, **sampling)
  else:
    raise ValueError(
      f"--mode=generate needs a decoder or encoder_decoder model; "
      f"config.model.family is {model_cfg.family!r}."
    )
  generated = np.asarray(out.tokens[:, 0] if beams > 1 else out.tokens)
  return [tok.decode(row) for row in generated]


def export(config: ml_collections.ConfigDict, workdir: str, hf_dir: str) -> str:
  """--mode=export: the workdir's latest parameters written as a Hugging Face directory; a LoRA
  run's merged, and its adapters also in PEFT's files under `<hf_dir>/adapter` (Llama-shaped)."""
  import jax

  from jtrans import finetune, hf, storage
  from jtrans.finetune import peft as peft_files
  from jtrans.models import ModelConfig

  if not hf_dir:
    raise ValueError("--mode=export needs --hf_dir (where to write).")
  tuning = finetune.Settings.from_config(config)
  cfg = ModelConfig.from_config(config.model)
  if tuning.virtual_tokens:
    raise ValueError(
      f"--mode=export: a {tuning.method}-tuned model's keys and values have no place in a "
      "Hugging Face model directory; generate from the workdir (--mode=generate "
      "--workdir=...) instead."
    )
  if tuning.method != "lora":
    hf.save_pretrained(hf_dir, cfg, jax.device_get(restore_params(config, workdir)))
    return f"wrote {hf_dir}: load it with transformers' from_pretrained."
  params = jax.device_get(restore_params(config, workdir, merged=False))
  hf.save_pretrained(hf_dir, cfg, finetune.model_params(params, tuning))
  done = f"wrote {hf_dir}: the base with the LoRA adapters merged (transformers' from_pretrained)"
  try:
    adapter = str(storage.path(hf_dir) / "adapter")
    peft_files.save_adapter(adapter, cfg, params, tuning, base=config.train.init_from)
  except hf.ConversionError as e:
    return f"{done}; no PEFT adapter: {e}"
  return (
    f"{done}, and {adapter}: the adapters alone in PEFT's files "
    f"(peft.PeftModel.from_pretrained(<the base model {config.train.init_from or 'exported'}>, "
    f"'{adapter}'))."
  )


def sweep(
  path: str, workdir: str | None, index: int | None, overrides: dict[str, Any], dry_run: bool
) -> tuple[str, bool]:
  """--sweep: trains the sweep file's points in subdirectories of `workdir` (or, `dry_run`, lists
  them with their estimated cost). Returns (what to print, whether a point failed or was
  interrupted: a job array must see that)."""
  from jtrans.scaling import sweep as sweeps

  loaded = sweeps.load(path)
  if dry_run:
    return sweeps.dry_run_table(loaded, overrides, workdir), False
  counts = sweeps.run(loaded, workdir, index, overrides)
  return "", bool(counts.get("failed") or counts.get("interrupted"))
