"""Data layer: tokenizers, TFDS sources and grain LM pipelines.

Importing this package registers the ``pydoc_topics`` TFDS builder.
"""

from jtrans.data import pydoc_corpus as pydoc_corpus  # registers pydoc_topics
from jtrans.data.pipeline import make_lm_dataset, unigram_entropy
from jtrans.data.sources import DatasetNotPreparedError, load_source
from jtrans.data.tokenizers import ByteTokenizer, Tokenizer, get_tokenizer

__all__ = [
    "ByteTokenizer",
    "DatasetNotPreparedError",
    "Tokenizer",
    "get_tokenizer",
    "load_source",
    "make_lm_dataset",
    "unigram_entropy",
]
