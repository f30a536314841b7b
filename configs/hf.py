"""Fine-tune a Hugging Face checkpoint: the architecture comes from the directory's config.json,
the weights from its safetensors (config.train.init_from), the objective from the family.

  python run.py --config=configs/hf.py:/path/to/gpt2 --workdir=runs/gpt2_ft \
      --config.data.name=files --config.data.train_files='my/*.txt' --config.data.eval_files='val/*.txt'

Reads GPT-2, Llama, BERT, Marian, T5 and ViT directories (jtrans/hf). The tokenizer is the
directory's own (tokenizer.json; Marian's source.spm/target.spm + vocab.json; vocab.json +
merges.txt; vocab.txt), with AutoTokenizer's ids; without one the run fails naming the files
looked for, unless --config.data.tokenizer says otherwise (e.g. byte). A ViT directory's
preprocessor_config.json gives the pixels' mean and std. The recipe (lr 1e-4, 1000 steps,
batch 16 x 256) is a starting point for fine-tuning; override any key with --config.<key>.
Expected: the first evaluation equals the checkpoint's own loss on your data, and it falls from
there (tests/pretrained_test.py checks that the weights arrive unchanged).
"""

import dataclasses

import ml_collections
import numpy as np

from configs import base

OBJECTIVES = {
  "decoder": "lm",
  "encoder": "mlm",
  "encoder_decoder": "seq2seq",
  "vit": "classification",
}


def get_config(directory: str) -> ml_collections.ConfigDict:
  from jtrans import hf  # Imported here: reading a config file should not load JAX otherwise.

  imported = hf.load_config(directory)  # config.json and tensor shapes; no weights read.
  c = base.get_config()
  for field in dataclasses.fields(imported):
    value = getattr(imported, field.name)
    c.model[field.name] = (
      value if field.name not in ("dtype", "param_dtype") else np.dtype(value).name
    )
  c.loss.objective = OBJECTIVES[imported.family]
  c.train.init_from = directory
  # The directory's own tokenizer (jtrans/data/hf_tokenizer.py); one it lacks fails at start-up
  # naming the files looked for (--config.data.tokenizer=byte trains on bytes instead).
  c.data.tokenizer, c.data.tokenizer_path = "hf", directory
  c.data.seq_len = min(256, imported.max_len)
  if imported.family == "vit":  # The directory's image processor: its mean and std.
    c.data.update(hf.vit.image_processing(directory, imported.image_size))
  c.train.batch_size, c.train.steps, c.train.eval_every, c.train.checkpoint_every = (
    16,
    1000,
    200,
    200,
  )
  c.optim.lr, c.optim.warmup_steps, c.optim.schedule = 1e-4, 50, "linear"
  if imported.family != "decoder":
    c.sample.num_samples = 0
  # The end-of-training samples fit the model's position table (a short prompt plus this).
  c.sample.length = min(c.sample.length, imported.max_len - 8)
  return c
