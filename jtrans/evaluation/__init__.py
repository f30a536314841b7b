"""Evaluation beyond the training loss: lm-evaluation-harness tasks (`harness.py`)."""
