"""Nanda et al.'s grokking run in plain PyTorch: the reference jtrans's recipe is held to.

The math of their notebook (TransformerLens's HookedTransformer with its biases frozen at 0):
tokens [a, b, =], one block of width 128 (4 heads of 32, ReLU MLP of 512), no LayerNorm,
learned positions, untied unembedding, every weight N(0, 0.8 / sqrt(128)); the loss is
cross-entropy at the last position, computed in float64; full-batch AdamW(lr 1e-3, betas
(0.9, 0.98), weight decay 1) with lr * min(step / 10, 1). Their split: torch.manual_seed(598)
and randperm of the 12,769 pairs, 30% for training; their model seed 999.

  python experiments/grokking/reference_torch.py --steps=15000           # Nanda's setup
  python experiments/grokking/reference_torch.py --vocab_in=128 --vocab_out=128

`--vocab_in` / `--vocab_out` add unused embedding rows and output classes (drawn from another
generator, so Nanda's own weights stay as they are): what jtrans's recipe has when its
model.vocab_size exceeds the 113 answers. tests/experiments_test.py checks that jtrans's step
and `train_step` here agree on the same weights and batch.
"""

from __future__ import annotations

import argparse
import time

import torch

P, D_MODEL, HEADS, D_HEAD, D_MLP = 113, 128, 4, 32, 512
SHAPES = {  # HookedTransformer's weight names and layouts.
  "W_E": ("vocab_in", D_MODEL),
  "W_pos": (3, D_MODEL),
  "W_Q": (HEADS, D_MODEL, D_HEAD),
  "W_K": (HEADS, D_MODEL, D_HEAD),
  "W_V": (HEADS, D_MODEL, D_HEAD),
  "W_O": (HEADS, D_HEAD, D_MODEL),
  "W_in": (D_MODEL, D_MLP),
  "W_out": (D_MLP, D_MODEL),
  "W_U": (D_MODEL, "vocab_out"),
}


def nanda_split() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
  """(train pairs, test pairs) exactly as their notebook draws them."""
  torch.manual_seed(598)
  pairs = [(a, b) for a in range(P) for b in range(P)]
  order = torch.randperm(P * P).tolist()
  cut = int(0.3 * P * P)
  return [pairs[i] for i in order[:cut]], [pairs[i] for i in order[cut:]]


def nanda_weights(vocab_in: int = P + 1, vocab_out: int = P, seed: int = 999) -> dict:
  """Their initialisation; extra rows (before "=", the last input id) and output columns come
  from a second generator."""
  torch.manual_seed(seed)
  std = 0.8 / D_MODEL**0.5
  sizes = {"vocab_in": P + 1, "vocab_out": P}
  w = {k: torch.randn(*(sizes.get(n, n) for n in s)) * std for k, s in SHAPES.items()}
  extra = torch.Generator().manual_seed(1)
  rows = torch.randn(vocab_in - P - 1, D_MODEL, generator=extra) * std
  w["W_E"] = torch.cat([w["W_E"][:P], rows, w["W_E"][P:]])
  w["W_U"] = torch.cat([w["W_U"], torch.randn(D_MODEL, vocab_out - P, generator=extra) * std], 1)
  return {k: v.requires_grad_() for k, v in w.items()}


def last_logits(w: dict, tokens: torch.Tensor) -> torch.Tensor:
  """[batch, 3] token ids -> [batch, vocab_out] logits at the last position. One layer: the
  last position reads the others only through attention, so nothing else is computed."""
  x = w["W_E"][tokens] + w["W_pos"]
  q = torch.einsum("bd,hde->bhe", x[:, -1], w["W_Q"])
  k = torch.einsum("bsd,hde->bhse", x, w["W_K"])
  v = torch.einsum("bsd,hde->bhse", x, w["W_V"])
  pattern = (torch.einsum("bhe,bhse->bhs", q, k) / D_HEAD**0.5).softmax(-1)
  x = x[:, -1] + torch.einsum("bhs,bhse,hed->bd", pattern, v, w["W_O"])
  x = x + torch.relu(x @ w["W_in"]) @ w["W_out"]
  return x @ w["W_U"]


def loss_and_accuracy(w: dict, tokens: torch.Tensor, answers: torch.Tensor):
  logits = last_logits(w, tokens).double()  # Their float64 loss.
  log_probs = logits.log_softmax(-1).gather(-1, answers[:, None])[:, 0]
  return -log_probs.mean(), (logits.argmax(-1) == answers).double().mean()


def optimizer(w: dict) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
  opt = torch.optim.AdamW(list(w.values()), lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98))
  return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(step / 10, 1))


def train_step(w: dict, opt, schedule, tokens: torch.Tensor, answers: torch.Tensor) -> float:
  """One full-batch step; returns the loss before it."""
  loss, _ = loss_and_accuracy(w, tokens, answers)
  loss.backward()
  opt.step()
  schedule.step()
  opt.zero_grad()
  return loss.item()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=15000)
  parser.add_argument("--vocab_in", type=int, default=P + 1)
  parser.add_argument("--vocab_out", type=int, default=P)
  parser.add_argument("--threads", type=int, default=1)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)

  def tensors(pairs):
    tokens = torch.tensor([[a, b, args.vocab_in - 1] for a, b in pairs])
    return tokens, torch.tensor([(a + b) % P for a, b in pairs])

  train, test = (tensors(pairs) for pairs in nanda_split())
  w = nanda_weights(args.vocab_in, args.vocab_out)
  opt, schedule = optimizer(w)
  began = time.time()
  for step in range(args.steps + 1):
    if step % 500 == 0:
      with torch.no_grad():
        (train_loss, train_acc), (test_loss, test_acc) = (
          loss_and_accuracy(w, *train),
          loss_and_accuracy(w, *test),
        )
        norm = sum(float((v**2).sum()) for v in w.values()) ** 0.5
      print(
        f"{step} train {train_loss:.3g} {train_acc:.4f} test {test_loss:.4g} {test_acc:.4f} "
        f"norm {norm:.2f} {time.time() - began:.0f}s",
        flush=True,
      )
    train_step(w, opt, schedule, *train)


if __name__ == "__main__":
  main()
