"""Instruction data (jtrans/data/chat.py): conversations rendered with a Hugging Face
directory's own chat template weigh exactly the tokens transformers marks as the assistant's,
pack whole with segment ids, and resume exactly. The README's LoRA instruction-tuning commands
(tests/readme_test.py) train on `chat_task`'s data and measure the accuracy it gains."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jtrans.data import chat  # noqa: E402
from jtrans.data.hf_tokenizer import HfTokenizer  # noqa: E402
from jtrans.data.tokenizers import ByteTokenizer  # noqa: E402

WORDS = "zero one two three four five six seven eight nine".split()
PHRASINGS = (
  "Write {} in words.",
  "Spell the number {}.",
  "What is {} as a word?",
  "{} in letters, please.",
  "Say {} out loud.",
  "Give me {} spelled out.",
  "How do you write {}?",
  "The digit {} is called what?",
  "Name {}.",
  "Please spell {} for me.",
)
# Qwen's ChatML layout, with transformers' {% generation %} marks around the assistant's text.
CHATML = (
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
  "{% if message['role'] == 'assistant' %}{% generation %}"
  "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
  "{% else %}{{ message['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def conversation(phrasing: int, digit: int) -> list[dict[str, str]]:
  return [
    {"role": "user", "content": PHRASINGS[phrasing].format(digit)},
    {"role": "assistant", "content": WORDS[digit]},
  ]


def make_chat_task(root) -> dict:
  """A random GPT-2 directory with its own byte-level BPE tokenizer and ChatML template (its
  end of turn, <|im_end|>, is not its EOS), and the digit-naming task as conversations: every
  phrasing with every digit, one pair per phrasing held out (each digit once) for evaluation.
  """
  import tokenizers
  import torch
  import transformers
  from tokenizers import decoders, models, pre_tokenizers, trainers

  pairs = [(p, d) for p in range(len(PHRASINGS)) for d in range(10)]
  held = [(p, 3 * p % 10) for p in range(len(PHRASINGS))]
  texts = [PHRASINGS[p].format(d) + " " + WORDS[d] for p, d in pairs] + ["user assistant"]
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=400,
    special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(texts * 10, trainer)
  fast = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", chat_template=CHATML
  )
  directory = os.path.join(root, "model")
  fast.save_pretrained(directory)
  torch.manual_seed(0)
  # Weights 5x GPT-2's init scale: the frozen tied embeddings then allow confident logits.
  eos = fast.eos_token_id
  config = transformers.GPT2Config(
    vocab_size=len(fast),
    n_positions=64,
    n_embd=64,
    n_layer=2,
    n_head=4,
    initializer_range=0.1,
    bos_token_id=eos,
    eos_token_id=eos,
  )
  transformers.GPT2LMHeadModel(config).save_pretrained(directory)
  files = {}
  for split, chosen in (("train", [x for x in pairs if x not in held]), ("eval", held)):
    files[split] = os.path.join(root, "chat", f"{split}.jsonl")
    os.makedirs(os.path.dirname(files[split]), exist_ok=True)
    with open(files[split], "w") as f:
      f.writelines(json.dumps({"messages": conversation(p, d)}) + "\n" for p, d in chosen)
  return {
    "dir": directory,
    "files": files,
    "held_out": [(PHRASINGS[p].format(d), WORDS[d]) for p, d in held],
  }


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  return make_chat_task(str(tmp_path_factory.mktemp("chat")))


def chat_data(directory, **overrides):
  from configs import base

  data = base.get_config().data
  data.tokenizer, data.tokenizer_path, data.sampling = "hf", directory, "chat"
  data.update(overrides)
  return data


CONVERSATIONS = [
  conversation(0, 7),
  [
    {"role": "system", "content": "Answer in one word."},
    *conversation(3, 2),
    {"role": "user", "content": "And 9?"},
    {"role": "assistant", "content": "nine"},
  ],
]


def test_weights_are_the_tokens_transformers_marks_as_the_assistants(task):
  """The directory's own template (chat_template=""): ids equal transformers'
  apply_chat_template, and weight 1 falls exactly on its assistant mask (each reply and its
  <|im_end|>); system, user, template and the newline after <|im_end|> weigh 0."""
  import transformers

  reference = transformers.AutoTokenizer.from_pretrained(task["dir"])
  tok = HfTokenizer(task["dir"])
  fmt = chat.make_format(chat_data(task["dir"]), tok)
  assert fmt.end_of_turn == reference.convert_tokens_to_ids("<|im_end|>") != tok.eos_id
  for messages in CONVERSATIONS:
    ids, weights = fmt.tokens(messages)
    want = reference.apply_chat_template(
      messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    np.testing.assert_array_equal(ids, want["input_ids"])
    np.testing.assert_array_equal(weights, want["assistant_masks"])
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    assert reference.decode(ids[weights > 0]) == "<|im_end|>".join(replies) + "<|im_end|>"
    # What generation is fed: the conversation so far and the assistant's header.
    prompt = fmt.prompt(messages[:-1])
    np.testing.assert_array_equal(prompt, ids[: len(prompt)])
    assert reference.decode(prompt).endswith("<|im_start|>assistant\n")


def test_the_default_template_weighs_each_reply_and_its_eos():
  """DEFAULT on bytes (Zephyr's layout): built here by hand, turn by turn."""
  tok = ByteTokenizer()
  fmt = chat.make_format(chat_data("", tokenizer="byte"), tok)
  assert fmt.end_of_turn == tok.eos_id
  messages = CONVERSATIONS[1]
  ids, weights = fmt.tokens(messages)
  want_ids, want_weights = [], []
  for m in messages:
    header = tok.encode(f"<|{m['role']}|>\n")
    content = list(tok.encode(m["content"])) + [tok.eos_id]
    newline = tok.encode("\n")
    assistant = float(m["role"] == "assistant")
    want_ids += [*header, *content, *newline]
    want_weights += [0.0] * len(header) + [assistant] * len(content) + [0.0] * len(newline)
  np.testing.assert_array_equal(ids, want_ids)
  np.testing.assert_array_equal(weights, want_weights)


def test_conversations_pack_whole_once_with_segment_ids_and_resume(task):
  """Evaluation: every conversation exactly once, whole inside one row, its positions from 0,
  its targets' weights those of `tokens` shifted by one, padding 0. Training: a restored
  iterator continues with the uninterrupted one's batches."""
  tok = HfTokenizer(task["dir"])
  data = chat_data(task["dir"])
  fmt = chat.make_format(data, tok)
  records = [json.loads(line) for line in open(task["files"]["train"])]
  keys = ("messages", "source", "target")
  common = dict(source=records, fmt=fmt, keys=keys, seq_len=48, batch_size=4, seed=0)
  found = []
  for batch in chat.make_chat_dataset(**common, train=False):
    for row in range(4):
      segments = batch["segment_ids"][row]
      assert np.all(batch["weights"][row][segments == 0] == 0)
      for s in np.unique(segments[segments > 0]):
        at = segments == s
        np.testing.assert_array_equal(batch["positions"][row][at], np.arange(at.sum()))
        ids = np.concatenate([batch["inputs"][row][at][:1], batch["targets"][row][at]])
        found.append((ids.tolist(), batch["weights"][row][at].tolist()))
  want = []
  for record in records:
    ids, weights = fmt.tokens(record["messages"])
    want.append((ids.tolist(), weights[1:].tolist()))
  assert sorted(found) == sorted(want)
  it = iter(chat.make_chat_dataset(**common, train=True))
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  again = iter(chat.make_chat_dataset(**common, train=True))
  again.set_state(state)
  for want_batch in expected:
    got = next(again)
    for key in want_batch:
      np.testing.assert_array_equal(got[key], want_batch[key])


def test_pairs_are_one_user_and_one_assistant_turn(task):
  tok = HfTokenizer(task["dir"])
  fmt = chat.make_format(chat_data(task["dir"]), tok)
  pair = {"source": "Write 7 in words.", "target": "seven"}
  messages = chat.messages_of(pair, ("", "source", "target"))
  assert messages == conversation(0, 7)
  with pytest.raises(ValueError, match="config.data.messages_key"):
    chat.messages_of(pair, ("messages", "source", "target"))
  ids, weights = fmt.tokens(messages)
  assert tok.decode(ids[weights > 0]) == "seven"


@pytest.mark.parametrize(
  "template, message",
  [
    # Rewrites the earlier turns once the conversation grows: replies cannot be told apart.
    (
      "{% for m in messages %}{{ m['content'] if loop.last else '...' }}{{ eos_token }}"
      "{% endfor %}",
      "rewrites earlier turns",
    ),
    ("{% for m in messages %}{{ m['content'] }}\n{% endfor %}", "no special token after"),
  ],
)
def test_a_template_that_cannot_work_is_refused_naming_the_setting(template, message, tmp_path):
  path = tmp_path / "template.jinja"
  path.write_text(template)
  data = chat_data("", tokenizer="byte", chat_template=str(path))
  with pytest.raises(ValueError, match=f"config.data.chat_template.*{message}"):
    fmt = chat.make_format(data, ByteTokenizer())
    fmt.tokens(CONVERSATIONS[0])
  with pytest.raises(FileNotFoundError, match="config.data.chat_template"):
    chat.make_format(chat_data("", chat_template=str(tmp_path / "none.jinja")), ByteTokenizer())
