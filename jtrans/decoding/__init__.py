"""Decoding: KV-cache sampling (greedy, temperature, top-k, top-p) and beam search.

    from jtrans import decoding
    tokens, lengths = decoding.left_pad(prompt_ids, pad_id)
    out = decoding.generate(model, params, tokens, lengths, rng, max_new_tokens=64, ...)
    from jtrans.decoding import beam_search
    out = beam_search.beam_search(model, params, tokens, lengths, num_beams=4, ...)

`sampling.py` holds the steppers (one compiled decode step over a KV cache, for decoders and
encoder-decoders) and the sampling loop; `beam_search.py` searches with the same steppers.
"""

from jtrans.decoding.sampling import (
  Generated,
  Sampling,
  Stepper,
  check_length,
  filter_logits,
  generate,
  generate_seq2seq,
  left_pad,
  lm_stepper,
  sample_logits,
  seq2seq_stepper,
)

__all__ = [
  "Generated",
  "Sampling",
  "Stepper",
  "check_length",
  "filter_logits",
  "generate",
  "generate_seq2seq",
  "left_pad",
  "lm_stepper",
  "sample_logits",
  "seq2seq_stepper",
]
