"""EleutherAI's lm-evaluation-harness on jtrans models: the `jtrans` model of `lm_eval`.

  python -m jtrans.evaluation.harness --model jtrans --model_args workdir=runs/lm_tiny \
      --tasks my_task --include_path tasks/
  python -m jtrans.evaluation.harness --model jtrans --model_args hf_dir=/models/gpt2 --tasks ...

The command registers the model name "jtrans" with lm_eval and runs lm_eval's own command line,
so every lm_eval flag works (`--limit`, `--output_path`, `--log_samples`, ...). `--model_args`:
`workdir=` (a training run: its config.json and latest checkpoint, LoRA merged) or `hf_dir=`
(a Hugging Face directory, imported as `configs/hf.py` does, with its own tokenizer);
`batch_size=` (rows per forward pass, default 8, rounded up to the mesh's data-parallel
devices) and `max_length=` (default the model's max_len). Tasks whose data sets are local
files (`dataset_path: json` with `dataset_kwargs: {data_files: ...}`) run offline.

Scoring follows lm_eval's Hugging Face model (`--model hf`) request by request: a context's
trailing spaces move to the continuation, which is the tail of encode(context +
continuation); an empty context is conditioned on EOS; long inputs keep their last max_length
tokens; rolling log-likelihoods use lm_eval's disjoint windows; generation is greedy and
stops at the first `until` string. The forward passes run jit-compiled on the run's mesh,
`batch_size` rows at a time, right-padded to a multiple of 64 positions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

PAD_TO = 64  # Inputs are right-padded to a multiple of this: few shapes, few compiles.


def _load(workdir: str | None, hf_dir: str | None):
  """(config, layout, params, tokenizer) of a training run or a Hugging Face directory."""
  import ml_collections

  from jtrans import modes, parts, storage
  from jtrans.hf import pretrained

  if bool(workdir) == bool(hf_dir):
    raise ValueError("--model_args: give one of workdir=<training run> or hf_dir=<HF directory>.")
  if workdir:
    config = ml_collections.ConfigDict(
      json.loads((storage.path(workdir) / "config.json").read_text())
    )
    layout = parts.build_layout(config)
    params = modes.restore_params(config, workdir)
  else:
    from configs import hf as hf_config

    config = hf_config.get_config(hf_dir)
    layout = parts.build_layout(config)
    params = pretrained.import_params(
      hf_dir, layout.model_cfg, layout.abstract.params, layout.shardings.params
    )
  if layout.model_cfg.family != "decoder":
    raise ValueError(
      f"lm_eval's jtrans model scores decoder LMs; this one is {layout.model_cfg.family!r}."
    )
  return config, layout, params, parts.make_tokenizer(config)


@register_model("jtrans")
class JtransLM(TemplateLM):
  """`lm_eval.api.model.LM` over a jtrans decoder: loglikelihood, loglikelihood_rolling and
  generate_until."""

  def __init__(
    self,
    workdir: str | None = None,
    hf_dir: str | None = None,
    batch_size: int | str = 8,
    max_length: int | None = None,
    device: str | None = None,  # lm_eval's --device: JAX places the model on the run's mesh.
    max_batch_size: int | None = None,  # lm_eval's, for batch_size=auto; not used.
  ):
    super().__init__()
    del device, max_batch_size
    from jtrans import sharding

    self.config, self.layout, self.params, self.tok = _load(workdir, hf_dir)
    cfg, mesh = self.layout.model_cfg, self.layout.mesh
    devices = mesh.shape["data"] * mesh.shape["fsdp"]  # Rows split over these.
    rows = 8 if batch_size == "auto" else int(batch_size)
    self.batch_size = -(-rows // devices) * devices
    self._max_length = int(max_length or cfg.max_len)
    model = self.layout.model
    batch_sharding = sharding.batch_sharding(mesh)

    def token_logprobs(params, inputs, targets):
      """log p(target) and whether it is the argmax, at every position `[rows, length]`."""
      logits = model.apply({"params": params}, inputs).astype(jnp.float32)
      logprobs = jax.nn.log_softmax(logits, axis=-1)
      chosen = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
      return chosen, jnp.argmax(logits, axis=-1) == targets

    self._token_logprobs = jax.jit(
      token_logprobs,
      in_shardings=(self.layout.shardings.params, batch_sharding, batch_sharding),
    )

  # ------------------------------------------------------------ what lm_eval asks of a model

  @property
  def eot_token_id(self) -> int:
    return self.tok.eos_id

  @property
  def max_length(self) -> int:
    return self._max_length

  @property
  def max_gen_toks(self) -> int:
    return 256

  def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
    return [int(i) for i in self.tok.encode(string)]

  def tok_decode(self, ids: Sequence[int]) -> str:
    return self.tok.decode(np.asarray(ids, np.int32))

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
    """[(request, context ids, continuation ids)] -> [(sum log p(continuation), greedy)]."""
    return self.score([(context, continuation) for _, context, continuation in requests])

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """Each string's total log-likelihood over lm_eval's disjoint rolling windows."""
    results = []
    for (string,) in [r.args for r in requests]:
      windows = [
        lm_eval_utils.make_disjoint_window(w)
        for w in lm_eval_utils.get_rolling_token_windows(
          token_list=self.tok_encode(string),
          prefix_token=self.prefix_token_id,
          max_seq_len=self.max_length,
          context_len=1,
        )
      ]
      results.append(float(sum(logprob for logprob, _ in self.score(windows))))
    return results

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Greedy continuations, cut at the first of the request's `until` strings."""
    from jtrans import decoding

    outputs = []
    for context, options in [r.args for r in requests]:
      options = dict(options or {})
      until = options.get("until") or [self.tok_decode([self.eot_token_id])]
      until = [until] if isinstance(until, str) else list(until)
      new_tokens = int(options.get("max_gen_toks", self.max_gen_toks))
      prompt = self.tok_encode(context)[-max(self.max_length - new_tokens, 1) :]
      prompt = prompt or [self.prefix_token_id]  # An empty context starts from EOS.
      tokens, lengths = decoding.left_pad([prompt], self.tok.pad_id)
      out = decoding.generate(
        self.layout.model,
        self.params,
        tokens,
        lengths,
        None,
        max_new_tokens=new_tokens,
        eos_id=self.tok.eos_id,
        pad_id=self.tok.pad_id,
      )
      text = self.tok_decode(np.asarray(out.tokens)[0])
      for stop in until:
        if stop and stop in text:
          text = text[: text.index(stop)]
      outputs.append(text)
    return outputs

  # ------------------------------------------------------------ batched scoring on the mesh

  def score(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """[(context ids, continuation ids)] -> [(sum of the continuation's log-probabilities,
    whether every continuation token is the argmax)], `batch_size` rows per forward pass."""
    results = []
    for start in range(0, len(pairs), self.batch_size):
      chunk = pairs[start : start + self.batch_size]
      # The last max_length + 1 tokens: inputs are all but the last, targets all but the first.
      rows = [(list(ctx) + list(cont))[-(self.max_length + 1) :] for ctx, cont in chunk]
      length = -(-max(len(r) - 1 for r in rows) // PAD_TO) * PAD_TO
      length = min(length, self.max_length)
      inputs = np.full((self.batch_size, length), self.tok.pad_id, np.int32)
      targets = np.full((self.batch_size, length), self.tok.pad_id, np.int32)
      for i, row in enumerate(rows):
        inputs[i, : len(row) - 1], targets[i, : len(row) - 1] = row[:-1], row[1:]
      chosen, greedy = jax.device_get(self._token_logprobs(self.params, inputs, targets))
      for i, (row, (_, cont)) in enumerate(zip(rows, chunk)):
        end = len(row) - 1
        span = slice(end - len(cont), end)
        results.append(
          (float(np.sum(chosen[i, span], dtype=np.float64)), bool(greedy[i, span].all()))
        )
    return results


def main() -> None:
  """`lm_eval`'s command line, with the `jtrans` model registered (this module's import)."""
  from lm_eval.__main__ import cli_evaluate

  cli_evaluate()


if __name__ == "__main__":
  main()
