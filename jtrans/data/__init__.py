"""Data layer: tokenizers, sources (TFDS or local files) and grain pipelines.

Importing this package registers the project's TFDS builders (``sources.LOCAL_BUILDERS``):
``pydoc_topics``, ``modular_arithmetic``, ``copy_strings``, ``reverse_strings``,
``synthetic_images`` and ``tiny_shakespeare_file``.
"""

from jtrans.data import sources  # registers the project's TFDS builders
from jtrans.data.images import make_image_dataset
from jtrans.data.pipeline import make_lm_dataset, unigram_entropy
from jtrans.data.seq2seq import make_seq2seq_dataset
from jtrans.data.sources import DatasetNotPreparedError, load_source
from jtrans.data.tokenizers import ByteTokenizer, Tokenizer, from_config, get_tokenizer

__all__ = [
  "ByteTokenizer",
  "DatasetNotPreparedError",
  "Tokenizer",
  "from_config",
  "get_tokenizer",
  "load_source",
  "make_image_dataset",
  "make_lm_dataset",
  "make_seq2seq_dataset",
  "sources",
  "unigram_entropy",
]
