"""T5 v1.1 pre-training (Raffel et al. 2020, section 3.1.4): span corruption on C4's English
text, the objective T5's released checkpoints were trained with, then fine-tuned per task.

15% of each row's tokens are dropped in spans of mean length 3, each span replaced by one
sentinel (the vocabulary's last ids: SentencePiece's 32000 pieces + room for the sentinels in
the model's 32128 rows, as T5's); the encoder reads 512 tokens (568 raw tokens of packed text),
the decoder predicts the 114 of the dropped spans (objective "span_corruption",
jtrans/data/span_corruption.py). The architecture and sizes are configs/t5.py's; dropout is off
for pre-training, as in v1.1. T5 pre-trained for 2^19 steps of 128 rows with Adafactor; jtrans
uses AdamW with the same inverse-square-root schedule.

  python run.py --mode=plan --config=configs/t5_c4.py:small
  python run.py --config=configs/t5_c4.py:small --workdir=gs://bucket/t5_c4_small \
      --config.data.data_dir=gs://bucket/tensorflow_datasets
  python run.py --config=configs/t5_c4.py:tiny --workdir=runs/t5_c4_tiny   # bytes, on a CPU
`tiny` pre-trains configs/t5.py's tiny model on the embedded corpus in bytes (ByT5's 384-id
vocabulary: 259 byte ids + room for the sentinels), encoder rows of 128 bytes.
Expected for `tiny` (1000 steps of 32 rows, 2 CPU cores, 5 minutes): target loss (the dropped
spans and their sentinels) 2.52, 2.44, 2.37, 2.34 nats/token at steps 250..1000 on 8 eval
batches, token accuracy 0.35; `small` and up: T5 v1.1's own runs report no pre-training loss
to compare with (the paper compares fine-tuned scores), so none is stated here.
Prepare c4/en once as the README's "TFDS data sets" says.
"""

import ml_collections

from configs import t5
from jtrans.data import span_corruption

SIZES = t5.SIZES


def get_config(size: str = "tiny") -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f"configs/t5_c4.py: size {size!r} is not one of {sorted(SIZES)}.")
  c = t5.get_config(size)
  c.loss.objective = "span_corruption"
  d = c.data
  d.text_key, d.train_split, d.eval_split = "text", "train", "validation"
  if size == "tiny":
    c.model.vocab_size, c.model.max_len = 384, 256
    d.name, d.source_len = "pydoc_topics", 128
    c.train.steps, c.train.eval_batches = 1000, 8
    c.train.eval_every = c.train.checkpoint_every = 250
  else:
    c.model.dropout_rate = 0.0  # v1.1 pre-trains without dropout.
    d.name, d.source_len = "c4/en", 512
  d.seq_len = span_corruption.lengths(d.source_len)[1]  # 114 for 512 (T5's).
  return c
