"""Fine-tune a Hugging Face directory with one method: `full`, `lora`, `prefix` or `prompt`.

  python run.py --config=configs/finetune.py:path/to/gpt2,lora --workdir=runs/gpt2_lora
  python run.py --config=configs/finetune.py:path/to/model,lora --workdir=runs/chat_lora \
      --config.data.name=files --config.data.file_format=jsonl --config.data.sampling=chat \
      --config.data.train_files=chat/train.jsonl --config.data.eval_files=chat/eval.jsonl
  python run.py --mode=export --config=configs/finetune.py:path/to/gpt2,lora \
      --workdir=runs/gpt2_lora --hf_dir=runs/gpt2_lora_merged

The argument is `<directory>,<method>`; the model, weights, tokenizer and recipe come from
configs/hf.py (lr 1e-4, 1000 steps, batch 16 x 256 tokens), and the method sets
config.finetune:
- full: every parameter trains (configs/hf.py as it is).
- lora: LoRA r=8, alpha 16 on the attention's query and value projections (Hu et al. 2021's
  GPT-2 and GPT-3 setting; PEFT's default for Llama), the base frozen in bfloat16, lr 1e-3.
- prefix (decoders): 10 learned keys and values per layer through a 512-wide MLP, lr 5e-5 (Li
  & Liang 2021's table-to-text setting), the base frozen in bfloat16; with learned positions
  the prefix's 10 come off seq_len.
- prompt (decoders): 20 learned input vectors (sampled vocabulary rows at first), lr 3e-2
  (Lester et al. 2021 trained 100 with Adafactor at 0.3; these are AdamW's), the base frozen in
  bfloat16; with learned positions the 20 come off seq_len.
Any key can be overridden with --config.<key>; README "Fine-tuning" explains them. With
data.sampling=chat (the second command) the data are conversations rendered with the
directory's own chat template, the loss on the assistant's tokens (jtrans/data/chat.py).
Expected: the first evaluation equals the checkpoint's own loss on your data (for full and lora;
a fresh prefix already moves it) and falls from there; a LoRA run logs the trained share (0.24% for GPT-2 small) and leaves the base
weights bitwise unchanged (tests/finetune_test.py); `--mode=export` writes the merged model
and, for GPT-2 and Llama, the adapter in PEFT's files.
"""

import ml_collections

from configs import hf

METHODS = ("full", "lora", "prefix", "prompt")


def get_config(argument: str) -> ml_collections.ConfigDict:
  directory, _, method = argument.rpartition(",")
  if not directory or method not in METHODS:
    raise ValueError(
      f"configs/finetune.py:{argument!r}: give '<Hugging Face directory>,<method>' with "
      f"method one of {METHODS}, e.g. configs/finetune.py:path/to/gpt2,lora."
    )
  c = hf.get_config(directory)
  c.finetune.method = method
  if method == "lora":
    f = c.finetune
    f.lora_targets, f.lora_rank, f.lora_alpha = "attention/(query|value)$", 8, 16.0
    f.frozen_dtype = "bfloat16"
    c.optim.lr = 1e-3
  if method in ("prefix", "prompt"):
    f = c.finetune
    f.prefix_length, f.prefix_hidden, f.frozen_dtype = 10, 512, "bfloat16"
    c.optim.lr = 5e-5
  if method == "prompt":
    c.finetune.prefix_length, c.optim.lr = 20, 3e-2
  if method in ("prefix", "prompt") and c.model.positions == "learned":
    # The virtual tokens take the first positions of the learned position table.
    c.data.seq_len = min(c.data.seq_len, c.model.max_len - c.finetune.prefix_length)
  return c
