"""Instruction data: conversations rendered with a chat template, loss on the assistant alone.

A record is a conversation, `{"messages": [{"role": "system" | "user" | "assistant", "content":
str}, ...]}` (`config.data.messages_key`; a JSON string is parsed), or, with `messages_key=""`, a
prompt/response pair (`source_key`, `target_key`): one user turn and one assistant turn.

The template is Jinja, as Hugging Face writes it (`config.data.chat_template`):
- "": the tokenizer directory's own (`chat_template` in its `tokenizer_config.json`, or its
  `chat_template.jinja`), else `DEFAULT`;
- "default": `DEFAULT`, Zephyr's layout, where every turn ends with the tokenizer's EOS:
  `<|user|>\\n{content}</s>\\n<|assistant|>\\n{content}</s>\\n`;
- anything else: the path of a `.jinja` file (local or gs://).
It sees `messages`, `add_generation_prompt` and the special tokens (`bos_token`, `eos_token`,
...), rendered as transformers' `apply_chat_template` renders (trim_blocks, lstrip_blocks).

Weights: an assistant turn's tokens are those between the conversation rendered up to it with
the generation prompt (`<|assistant|>\\n`) and rendered through it; they weigh 1 up to and
including the template's end-of-turn token (the first special token after an assistant's
content: `</s>` above, Qwen's `<|im_end|>`, Llama 3's `<|eot_id|>`), and every system, user,
template and padding token weighs 0. Each piece is tokenized on its own, so the prompt's tokens
are exactly those --mode=generate feeds (`Format.prompt`), and generation stops at the
end-of-turn token. A template whose shorter renders are not prefixes of longer ones (one that
rewrites earlier turns) is refused, naming the setting.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from typing import Any

import grain
import jinja2
import ml_collections
import numpy as np
from jinja2 import ext, sandbox

from jtrans import storage
from jtrans.data import sources
from jtrans.data.iterators import JsonState
from jtrans.data.tokenizers import Tokenizer

Messages = list[dict[str, str]]
Batch = dict[str, np.ndarray]

DEFAULT = (
  "{% for message in messages %}"
  "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
  "{% endfor %}"
  "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
EOS_TEXT = "</s>"  # eos_token's text for tokenizers whose EOS has none (bytes, SentencePiece).


def _raise(message: str) -> None:
  raise jinja2.exceptions.TemplateError(message)


class _Generation(ext.Extension):
  """`{% generation %}...{% endgeneration %}`, transformers' marks of the assistant's text, is
  rendered as its body: the weights come from comparing renders, so templates with and without
  the marks give the same ones."""

  tags = {"generation"}

  def parse(self, parser: Any) -> jinja2.nodes.Node:
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.Scope(body, lineno=lineno)


def load_template(setting: str, tokenizer_path: str) -> str:
  """The template `config.data.chat_template` names (see the module docstring)."""
  if setting == "default":
    return DEFAULT
  if setting:
    path = storage.path(setting)
    if not path.is_file():
      raise FileNotFoundError(
        f"config.data.chat_template={setting!r} is not a file; give a .jinja template's path, "
        "'default', or '' for the tokenizer directory's own."
      )
    return path.read_text()
  if tokenizer_path and storage.path(tokenizer_path).is_dir():
    root = storage.path(tokenizer_path)
    settings = root / "tokenizer_config.json"
    own = json.loads(settings.read_text()).get("chat_template") if settings.is_file() else None
    if isinstance(own, list):  # Several named templates: transformers takes "default".
      own = {t["name"]: t["template"] for t in own}.get("default")
    if own:
      return own
    if (root / "chat_template.jinja").is_file():
      return (root / "chat_template.jinja").read_text()
  return DEFAULT


class Format:
  """A chat template bound to a tokenizer: renders conversations to ids and weights."""

  def __init__(self, template: str, tokenizer: Tokenizer):
    env = sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols, _Generation]
    )
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, indent=indent, ensure_ascii=False)
    self.template, self.tokenizer = env.from_string(template), tokenizer
    texts = dict(getattr(tokenizer, "tokens", {}))  # A Hugging Face tokenizer's own texts.
    texts.setdefault("eos", EOS_TEXT)
    self.variables = {f"{kind}_token": text for kind, text in texts.items()}
    # EOS's text -> its id, for tokenizers that would spell it out (bytes, SentencePiece; a
    # Hugging Face tokenizer maps its own special tokens' texts).
    self.eos_text = texts["eos"]
    self._split = re.compile(f"({re.escape(self.eos_text)})")
    self.end_of_turn = self._end_of_turn()

  def render(self, messages: Messages, add_generation_prompt: bool = False) -> str:
    return self.template.render(
      messages=messages, add_generation_prompt=add_generation_prompt, **self.variables
    )

  def encode(self, text: str) -> np.ndarray:
    """int32 ids of rendered text, the special tokens' texts mapped to their ids."""
    pieces = [
      np.array([self.tokenizer.eos_id], np.int32)
      if p == self.eos_text
      else self.tokenizer.encode(p)
      for p in self._split.split(text)
      if p
    ]
    return np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)

  def _end_of_turn(self) -> int:
    """The first special token the template writes after an assistant's content."""
    user = {"role": "user", "content": "Hi."}
    reply = {"role": "assistant", "content": "Hello."}
    turn = self.render([user, reply])[len(self.render([user], True)) :]
    after = turn[turn.find("Hello.") + len("Hello.") :] if "Hello." in turn else turn
    for token in self.encode(after):
      if self.tokenizer.decode(np.array([token])) == "":  # Special: decode drops it.
        return int(token)
    raise ValueError(
      f"config.data.chat_template: the template writes no special token after an assistant "
      f"turn (it ends {after!r}), so generation could not know where a reply ends; use "
      "'default' or a template that ends turns with one (e.g. the tokenizer's EOS)."
    )

  def prompt(self, messages: Messages) -> np.ndarray:
    """int32 ids of `messages` and the generation prompt: what the assistant continues."""
    return self.encode(self.render(messages, add_generation_prompt=True))

  def tokens(self, messages: Messages) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [n], weights float32 [n]) of a conversation: 1 on each assistant turn's
    tokens through its end-of-turn token, 0 elsewhere."""
    full = self.render(messages)
    pieces, done = [], 0
    for i, message in enumerate(messages):
      if message["role"] != "assistant":
        continue
      asked = self.render(messages[:i], add_generation_prompt=True)
      answered = self.render(messages[: i + 1])
      start, end = len(asked), len(answered)
      if start < done or not (full.startswith(asked) and full.startswith(answered)):
        raise ValueError(
          "config.data.chat_template: rendering a conversation up to an assistant turn does "
          "not give the start of rendering it whole (the template rewrites earlier turns), so "
          "the assistant's tokens cannot be told apart; use 'default' or another template."
        )
      pieces += [(full[done:start], False), (full[start:end], True)]
      done = end
    pieces.append((full[done:], False))
    ids, weights = [], []
    for text, assistant in pieces:
      piece = self.encode(text)
      weight = np.zeros(len(piece), np.float32)
      if assistant:
        ends = np.flatnonzero(piece == self.end_of_turn)
        weight[: ends[0] + 1 if len(ends) else len(piece)] = 1.0
      ids.append(piece)
      weights.append(weight)
    return np.concatenate(ids), np.concatenate(weights)


def make_format(data: ml_collections.ConfigDict, tokenizer: Tokenizer) -> Format:
  """config.data's chat template bound to the run's tokenizer."""
  return Format(load_template(data.chat_template, data.tokenizer_path), tokenizer)


def format_of(data: ml_collections.ConfigDict, tokenizer: Tokenizer | None) -> Format | None:
  """The run's chat format with data.sampling="chat" (built once: it reads the template and
  probes it), else None."""
  return make_format(data, tokenizer) if data.sampling == "chat" else None


def prompts(
  fmt: Format | None, tokenizer: Tokenizer, texts: Sequence[str]
) -> tuple[list[np.ndarray], int]:
  """(ids a decoder continues for each text, the id that ends a reply). With a chat format
  each text is a user's turn followed by the generation prompt, and a reply ends at the
  template's end-of-turn token; otherwise the text's own ids (EOS, the document separator,
  for an empty one) and EOS."""
  if fmt is not None:
    return [fmt.prompt([{"role": "user", "content": t}]) for t in texts], fmt.end_of_turn
  eos = np.array([tokenizer.eos_id], np.int32)
  return [tokenizer.encode(t) if t else eos for t in texts], tokenizer.eos_id


def messages_of(record: dict[str, Any], keys: tuple[str, str, str]) -> Messages:
  """A record's conversation. `keys`: (messages_key, source_key, target_key); an empty
  messages_key reads a prompt/response pair."""
  messages_key, source_key, target_key = keys
  if not messages_key:
    return [
      {"role": "user", "content": sources.record_text(record, source_key, "source_key")},
      {"role": "assistant", "content": sources.record_text(record, target_key, "target_key")},
    ]
  messages = record.get(messages_key)
  if isinstance(messages, (bytes, str)):
    messages = json.loads(messages)
  if not isinstance(messages, list) or not all(
    isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages
  ):
    raise ValueError(
      f"a record's {messages_key!r} (config.data.messages_key) is not a list of "
      f'{{"role": ..., "content": ...}} turns; its fields are {sorted(record)}. For '
      "prompt/response records set --config.data.messages_key='' (source_key, target_key)."
    )
  return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def assistant_counts(
  source: Sequence[dict[str, Any]], fmt: Format, keys: tuple[str, str, str]
) -> np.ndarray:
  """int64 [vocab]: how often each token is an assistant's (weighted) token in `source`."""
  counts = np.zeros(fmt.tokenizer.vocab_size, np.int64)
  for record in source:
    ids, weights = fmt.tokens(messages_of(record, keys))
    counts += np.bincount(ids[weights > 0], minlength=len(counts))
  return counts


class _ToExample:
  """Record -> {'inputs', 'targets', 'weights'} of one conversation, cut to seq_len."""

  def __init__(self, fmt: Format, keys: tuple[str, str, str], seq_len: int):
    self.fmt, self.keys, self.seq_len = fmt, keys, seq_len

  def __call__(self, record: dict[str, Any]) -> Batch:
    ids, weights = self.fmt.tokens(messages_of(record, self.keys))
    ids, weights = ids[: self.seq_len + 1], weights[: self.seq_len + 1]
    return {"inputs": ids[:-1], "targets": ids[1:], "weights": weights[1:]}


class _EpochRecords:
  """Stream position -> record: epoch after epoch, each in a fresh seeded order (a numpy
  permutation drawn once an epoch: grain's per-index shuffle costs more than a render)."""

  def __init__(self, source: Sequence[dict[str, Any]], seed: int):
    self.source, self.seed = source, seed
    self._last = (-1, np.empty(0, np.int64))  # (epoch, its order), swapped whole.

  def __call__(self, position: int) -> dict[str, Any]:
    epoch, offset = divmod(position, len(self.source))
    last_epoch, order = self._last
    if last_epoch != epoch:
      order = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
      self._last = (epoch, order)
    return self.source[int(order[offset])]


def _to_batch_row(packed: Batch) -> Batch:
  return {
    "inputs": packed["inputs"],
    "targets": packed["targets"],
    "weights": packed["weights"],
    "segment_ids": packed["inputs_segment_ids"],
    "positions": packed["inputs_positions"],
  }


def make_chat_dataset(
  *,
  source: Sequence[dict[str, Any]],
  fmt: Format,
  keys: tuple[str, str, str],
  seq_len: int,
  batch_size: int,
  seed: int,
  train: bool,
  packing_bins: int = 64,
  worker_count: int = 0,
) -> grain.IterDataset:
  """Returns a grain dataset of conversations packed into next-token rows.

  Elements: `inputs`, `targets` int32 [B, seq_len]; `weights` float32 [B, seq_len] (1 on the
  assistant's tokens, 0 elsewhere and on padding); `segment_ids` (1, 2, ... per conversation
  in the row, 0 on padding) and `positions` (from 0 in each), so conversations never attend to
  each other. A conversation longer than seq_len + 1 tokens keeps its first seq_len + 1.
  Conversations are packed whole, first fit over `packing_bins` rows at a time.

  train=True: the records in a seeded order, a new one each epoch, forever; the packed rows
  are shuffled within each group of bins; the state is a position, so a restored iterator
  continues exactly. train=False: one pass in stored order, the last batch padded.
  """
  records = grain.MapDataset.source(source)
  if train:
    records = grain.MapDataset.range(2**62).map(_EpochRecords(source, seed))
  examples = records.map(_ToExample(fmt, keys, seq_len))
  packed = grain.experimental.FirstFitPackIterDataset(
    # No read-ahead threads: polling them costs more than rendering a conversation.
    examples.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)),
    length_struct={"inputs": seq_len, "targets": seq_len, "weights": seq_len},
    num_packing_bins=packing_bins,
    seed=seed,
    shuffle_bins=train,
  )
  rows = packed.map(_to_batch_row)
  if not train:
    return rows.batch(
      batch_size,
      batch_fn=lambda rows: grain.experimental.batch_and_pad(rows, batch_size=batch_size),
    )
  batches = rows.batch(batch_size, drop_remainder=True)
  if worker_count > 0:
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return JsonState(batches)
