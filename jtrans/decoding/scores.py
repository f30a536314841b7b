"""How good generated outputs are: exact match and sacrebleu's corpus BLEU, and both for an
encoder-decoder decoding the eval split's sources (what `config.train.eval_generate` adds to
every evaluation of a seq2seq run).

BLEU is sacrebleu's (Post 2018) with its defaults (13a tokenisation, exponential smoothing,
case-sensitive), computed on detokenized text, and its signature is returned with the score, so
that a number can be compared with published ones (report the signature beside it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import numpy as np
import sacrebleu

from jtrans.data.tokenizers import Tokenizer
from jtrans.decoding import beam_search, sampling


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
  """(corpus BLEU in [0, 100], sacrebleu's signature) of one reference per hypothesis."""
  metric = sacrebleu.metrics.BLEU()
  return metric.corpus_score(list(hypotheses), [list(references)]).score, str(
    metric.get_signature()
  )


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Fraction of hypotheses equal to their reference (whole strings)."""
  if len(hypotheses) != len(references) or not references:
    raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references.")
  return float(np.mean([h == r for h, r in zip(hypotheses, references)]))


class Scored(NamedTuple):
  scores: dict[str, float]  # exact_match (a fraction) and bleu (0-100).
  signature: str  # sacrebleu's, to quote beside the BLEU.
  hypotheses: list[str]  # The decoded outputs...
  references: list[str]  # ...and the targets they were scored against.


def seq2seq_examples(
  batches: Iterable[dict[str, np.ndarray]], examples: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
  """The first `examples` real rows of seq2seq eval batches: (source ids [n, source_len],
  source mask [n, source_len], each row's reference ids without padding)."""
  sources, masks, references = [], [], []
  iterator = iter(batches)
  try:
    for batch in iterator:
      real = batch["weights"].sum(axis=1) > 0  # Padding rows of the last batch have none.
      sources.append(batch["encoder_inputs"][real])
      masks.append(batch["encoder_mask"][real])
      references += [t[w > 0] for t, w in zip(batch["targets"][real], batch["weights"][real])]
      if len(references) >= examples:
        break
  finally:
    if hasattr(iterator, "close"):
      iterator.close()
  n = min(examples, len(references))
  return np.concatenate(sources)[:n], np.concatenate(masks)[:n], references[:n]


def seq2seq_scores(
  model: nn.Module,
  params: Any,
  batches: Iterable[dict[str, np.ndarray]],
  tokenizer: Tokenizer,
  *,
  examples: int,
  max_new_tokens: int,
  num_beams: int = 1,
  length_penalty: float = 0.6,
  length_penalty_style: str = "gnmt",
) -> Scored:
  """Decodes the first `examples` sources of seq2seq eval `batches` (greedy, or beam search
  with `num_beams`) and scores the outputs against the batches' targets: `exact_match` and
  `bleu`."""
  source, mask, reference_ids = seq2seq_examples(batches, examples)
  common = dict(
    start_id=tokenizer.pad_id,  # The seq2seq pipeline's decoder inputs start with pad.
    max_new_tokens=max_new_tokens,
    eos_id=tokenizer.eos_id,
    pad_id=tokenizer.pad_id,
  )
  if num_beams > 1:
    out = beam_search.beam_search_seq2seq(
      model,
      params,
      source,
      mask,
      num_beams=num_beams,
      length_penalty=length_penalty,
      length_penalty_style=length_penalty_style,
      **common,
    )
    tokens = np.asarray(out.tokens[:, 0])
  else:
    tokens = np.asarray(sampling.generate_seq2seq(model, params, source, mask, **common).tokens)
  hypotheses = [tokenizer.decode(row) for row in tokens]
  references = [tokenizer.decode(ids) for ids in reference_ids]
  score, signature = bleu(hypotheses, references)
  scores = {"exact_match": exact_match(hypotheses, references), "bleu": score}
  return Scored(scores, signature, hypotheses, references)
