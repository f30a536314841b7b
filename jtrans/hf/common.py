"""Shared plumbing of the Hugging Face converters: reading and writing a model directory,
taking tensors by name (so leftovers can be reported), reshaping torch Linear weights into our
head-shaped kernels, and checking a converted tree against the one our model initialises.

Parameters travel between here and the per-architecture files as flat dicts keyed by our
parameter path, e.g. "decoder/block_0/attention/query/kernel", of numpy arrays (float32
unless the import asks for another dtype). Tensors are read from the files one at a time, when a
converter takes them, so an import holds the converted model and one tensor, never the file twice.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np
import safetensors.numpy
from etils import epath

from jtrans import storage
from jtrans.models import ModelConfig, build_model, example_inputs

Flat = dict[str, np.ndarray]
SAFETENSORS_DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}

# Hugging Face activation names -> ours ("gelu_new" and friends are the tanh approximation).
ACTIVATIONS = {
  "gelu": "gelu_exact",
  "gelu_python": "gelu_exact",
  "gelu_new": "gelu",
  "quick_gelu": "quick_gelu",
  "gelu_fast": "gelu",
  "gelu_pytorch_tanh": "gelu",
  "gelu-approximate": "gelu",  # diffusers' name (DiT).
  "relu": "relu",
  "silu": "silu",
  "swish": "silu",
}


class ConversionError(ValueError):
  """A Hugging Face directory (or our model) that cannot be converted; says why and what to do."""


def read_config(directory: str) -> dict[str, Any]:
  path = storage.path(directory) / "config.json"
  if not path.is_file():
    raise ConversionError(
      f"{directory}: no config.json; point at a Hugging Face model directory "
      "(the one save_pretrained writes)."
    )
  return json.loads(path.read_text())


ALIGNMENT = 64  # Bytes: XLA's CPU client adopts a numpy buffer so aligned and copies others.


def aligned_empty(shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
  """An uninitialised array whose data starts on an `ALIGNMENT`-byte boundary (numpy gives 16)."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape)) * dtype.itemsize
  buffer = np.empty(nbytes + ALIGNMENT, np.uint8)
  offset = -buffer.ctypes.data % ALIGNMENT
  return buffer[offset : offset + nbytes].view(dtype).reshape(shape)


def aligned(x: np.ndarray) -> np.ndarray:
  """`x`, copied into an aligned buffer unless it already is one, so that placing it on a CPU
  device shares its memory instead of holding a second copy."""
  if x.flags.c_contiguous and x.ctypes.data % ALIGNMENT == 0:
    return x
  out = aligned_empty(x.shape, x.dtype)
  out[...] = x
  return out


@dataclasses.dataclass(frozen=True)
class StoredTensor:
  """Where one tensor lies in a .safetensors file: read only when a converter takes it."""

  path: epath.Path
  name: str
  dtype: np.dtype
  shape: tuple[int, ...]
  begin: int  # Absolute byte offsets in the file.
  end: int

  def read(self) -> np.ndarray:
    """The tensor's bytes, read alone into a fresh aligned buffer (no memory map whose pages
    would stay resident)."""
    size = self.end - self.begin
    out = aligned_empty(size, np.uint8)
    with self.path.open("rb") as f:  # Local or gs:// (a ranged read), through epath.
      f.seek(self.begin)
      got = f.readinto(out)
    if got != size:
      raise ConversionError(
        f"{self.path}: tensor {self.name!r} is cut short ({got} of {size} "
        "bytes); the file is incomplete, download or copy it again."
      )
    return out[:size].view(self.dtype).reshape(self.shape)


def _index_file(path: epath.Path) -> dict[str, StoredTensor]:
  """The header of one .safetensors file: each tensor's dtype, shape and byte range (numpy lacks
  bfloat16, ml_dtypes has it)."""
  with path.open("rb") as f:
    header_len = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(header_len))
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in SAFETENSORS_DTYPES:
      raise ConversionError(
        f"{path}: tensor {name!r} has dtype {info['dtype']}, which jtrans "
        f"does not read (it reads {sorted(SAFETENSORS_DTYPES)})."
      )
    begin, end = info["data_offsets"]
    out[name] = StoredTensor(
      path,
      name,
      np.dtype(SAFETENSORS_DTYPES[info["dtype"]]),
      tuple(info["shape"]),
      8 + header_len + begin,
      8 + header_len + end,
    )
  return out


def read_tensors(directory: str) -> dict[str, StoredTensor]:
  """Where every tensor of `model.safetensors` (diffusers: `diffusion_pytorch_model.safetensors`),
  or of the shards its index lists, lies; only the headers are read here."""
  root = storage.path(directory)
  stem = "model"
  if not any((root / f"model.safetensors{e}").is_file() for e in ("", ".index.json")):
    if (root / "diffusion_pytorch_model.safetensors").is_file():
      stem = "diffusion_pytorch_model"
  single = root / f"{stem}.safetensors"
  index = root / f"{stem}.safetensors.index.json"
  if single.is_file():
    return _index_file(single)
  if index.is_file():
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    tensors = {}
    for shard in shards:
      path = root / shard
      if not path.is_file():
        raise ConversionError(
          f"{directory}: shard {shard} listed in {index.name} is missing; download every shard."
        )
      tensors.update(_index_file(path))
    return tensors
  raise ConversionError(
    f"{directory}: neither model.safetensors nor model.safetensors.index.json "
    "found; save the model with save_pretrained(..., safe_serialization=True)."
  )


class Checkpoint:
  """The tensors of one directory, handed out once each, so that `finish` can name those that
  no converter took (a sign of an option we do not model)."""

  def __init__(
    self,
    directory: str,
    tensors: dict[str, StoredTensor],
    ignore: Iterable[str] = (),
    dtype: Any = np.float32,
    shapes_only: bool = False,
  ):
    """`shapes_only`: a pass that only works out the architecture. Tensors are then zero-stride
    stand-ins that read and allocate nothing."""
    self.directory = directory
    self.tensors = dict(tensors)
    self.ignore = [re.compile(p) for p in ignore]  # Buffers HF keeps but nothing computes.
    self.dtype = np.dtype(dtype)  # Each tensor is cast to it as it is read.
    self.shapes_only = shapes_only

  def _read(self, name: str) -> np.ndarray:
    stored = self.tensors.pop(name)
    if self.shapes_only:
      return np.broadcast_to(np.zeros((), self.dtype), stored.shape)
    return stored.read().astype(self.dtype, copy=False)

  def has(self, name: str) -> bool:
    return name in self.tensors

  def take(self, name: str) -> np.ndarray:
    if name not in self.tensors:
      raise ConversionError(
        f"{self.directory}: tensor {name!r} is missing from the checkpoint; "
        "is the config.json from the same model as the weights?"
      )
    return self._read(name)

  def take_tied(self, name: str, source: np.ndarray) -> np.ndarray | None:
    """A tensor HF ties to `source`: None if tied, else the tensor. An output head
    (`lm_head.*`) stored in the file is untied (save_pretrained leaves tied ones out, and
    transformers 5 writes tie_word_embeddings=true for T5 v1.1's untied head), which the
    headers alone tell; other ties are told by equal values."""
    if name not in self.tensors:
      return None
    value = self._read(name)
    if "lm_head" in name:
      return value
    if self.shapes_only:
      return None
    return None if value.shape == source.shape and np.array_equal(value, source) else value

  def prefix(self, *candidates: str) -> str:
    """The first candidate prefix that some tensor name starts with (e.g. "transformer.")."""
    for p in candidates:
      if any(k.startswith(p) for k in self.tensors):
        return p
    return candidates[-1]

  def finish(self):
    left = sorted(k for k in self.tensors if not any(p.search(k) for p in self.ignore))
    if left:
      raise ConversionError(
        f"{self.directory}: unexpected tensors {left[:8]}"
        f"{' ...' if len(left) > 8 else ''}; the checkpoint has parts this "
        "converter does not map (an option jtrans does not model)."
      )


def activation(name: str, setting: str, directory: str) -> str:
  if name not in ACTIVATIONS:
    raise ConversionError(
      f"{directory}: config.json {setting}={name!r} has no jtrans "
      f"equivalent; supported: {sorted(ACTIVATIONS)}."
    )
  return ACTIVATIONS[name]


def head_dim(config: dict[str, Any]) -> int:
  """Our attention_head_dim for HF's optional `head_dim`: 0 (the default) when it is the
  hidden size over the heads, so configs compare equal however they were written."""
  width = config["hidden_size"]
  explicit = config.get("head_dim") or width // config["num_attention_heads"]
  return 0 if explicit * config["num_attention_heads"] == width else explicit


def require(ok: bool, directory: str, why: str):
  if not ok:
    raise ConversionError(f"{directory}: {why}")


def require_settings(cfg: ModelConfig, required: dict[str, Any], name: str, model_type: str):
  """An export to `model_type` needs these config.model values; the error names the first
  that differs."""
  for key, value in required.items():
    if getattr(cfg, key) != value:
      raise ConversionError(
        f"config.model.{key}={getattr(cfg, key)!r}: {name} needs {value!r}; only {name} shaped "
        f"decoders can be exported as {model_type}."
      )


# Torch Linear weights are [out, in]; our kernels [in, out], split per head where they touch heads.


def linear_kernel(weight: np.ndarray) -> np.ndarray:
  if not any(weight.strides):  # A shapes-only stand-in stays a view: nothing to copy.
    return weight.T
  return np.ascontiguousarray(weight.T)


def in_heads(kernel: np.ndarray, heads: int) -> np.ndarray:
  """`[embed, heads * head_dim]` -> `[embed, heads, head_dim]`."""
  return kernel.reshape(kernel.shape[0], heads, -1)


def out_heads(kernel: np.ndarray, heads: int) -> np.ndarray:
  """`[heads * head_dim, embed]` -> `[heads, head_dim, embed]`."""
  return kernel.reshape(heads, -1, kernel.shape[-1])


def dense(ckpt: Checkpoint, name: str, bias: bool = True) -> Flat:
  """A torch Linear `name` as our Dense {"kernel", "bias"}."""
  out = {"kernel": linear_kernel(ckpt.take(f"{name}.weight"))}
  if bias:
    out["bias"] = ckpt.take(f"{name}.bias")
  return out


def norm(ckpt: Checkpoint, name: str, bias: bool = True) -> Flat:
  out = {"scale": ckpt.take(f"{name}.weight")}
  if bias:
    out["bias"] = ckpt.take(f"{name}.bias")
  return out


def attention(
  ckpt: Checkpoint,
  names: tuple[str, str, str, str],
  cfg: ModelConfig,
  bias: bool | tuple[bool, bool] = True,
  query_scale: float = 1.0,
) -> Flat:
  """Separate query, key, value and output Linears as our Attention's head-shaped Einsums.

  `bias`: (projections, output) when only some carry one (absent biases become zeros, which
  is exact). `query_scale` multiplies the query projection (T5 does not scale q.k).
  """
  qkv_bias, out_bias = (bias, bias) if isinstance(bias, bool) else bias
  out = {}
  for ours, theirs, heads in zip(
    ("query", "key", "value"), names[:3], (cfg.num_heads, cfg.kv_heads, cfg.kv_heads)
  ):
    out[f"{ours}/kernel"] = in_heads(linear_kernel(ckpt.take(f"{theirs}.weight")), heads)
    if cfg.use_bias:
      b = ckpt.take(f"{theirs}.bias") if qkv_bias else np.zeros(heads * cfg.head_dim, np.float32)
      out[f"{ours}/bias"] = b.reshape(heads, cfg.head_dim)
  if query_scale != 1.0:  # In the tensors' own dtype: no float32 copy of a bfloat16 import.
    for name in ("query/kernel", "query/bias"):
      if name in out:
        out[name] = out[name] * out[name].dtype.type(query_scale)
  out["out/kernel"] = out_heads(linear_kernel(ckpt.take(f"{names[3]}.weight")), cfg.num_heads)
  if cfg.use_bias:
    out["out/bias"] = (
      ckpt.take(f"{names[3]}.bias") if out_bias else np.zeros(cfg.embed_dim, np.float32)
    )
  return out


def put(flat: Flat, prefix: str, values: Flat):
  """Adds `values` (keyed relative to `prefix`) to `flat`."""
  for k, v in values.items():
    flat[f"{prefix}/{k}"] = v


def nest(flat: Flat) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def flatten(tree: Any) -> Flat:
  """Our (unboxed) parameter tree -> float32 numpy arrays keyed by path."""
  tree = nn.meta.unbox(tree)
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {
    "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v, np.float32)
    for path, v in leaves
  }


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Path -> shape of the parameters `build_model(cfg).init` creates (traced, not computed)."""
  model = build_model(cfg)
  shapes = jax.eval_shape(
    lambda: nn.meta.unbox(model.init(jax.random.key(0), *example_inputs(cfg))["params"])
  )
  return {
    "/".join(str(k.key) for k in path): tuple(leaf.shape)
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]
  }


def check_tree(cfg: ModelConfig, flat: Flat, where: str):
  """Fails, naming each path, unless `flat` has exactly the parameters of `cfg`'s model."""
  expected = expected_shapes(cfg)
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  wrong = sorted(
    f"{k}: {flat[k].shape} != {expected[k]}"
    for k in set(expected) & set(flat)
    if tuple(flat[k].shape) != expected[k]
  )
  if missing or unexpected or wrong:
    raise ConversionError(
      f"{where}: the parameters do not match the jtrans model of this config: missing "
      f"{missing[:6]}, unexpected {unexpected[:6]}, wrong shapes {wrong[:6]}."
    )


def unstack_layers(flat: Flat, cfg: ModelConfig) -> Flat:
  """A `scan_layers` tree (`<stack>/layers/block/...` with a leading layer axis) unrolled into
  `<stack>/block_{i}/...`, the layout the converters read."""
  out = {}
  for path, value in flat.items():
    match = re.match(r"^(\w+)/layers/block/(.*)$", path)
    if match is None:
      out[path] = value
      continue
    for i in range(value.shape[0]):
      out[f"{match.group(1)}/block_{i}/{match.group(2)}"] = value[i]
  return out


def write(directory: str, config: dict[str, Any], tensors: Flat):
  """`config.json` and `model.safetensors` (contiguous float32, as torch expects)."""
  root = storage.path(directory)
  storage.write_text(root / "config.json", json.dumps(config, indent=2, sort_keys=True))
  tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}
  storage.write_bytes(
    root / "model.safetensors", safetensors.numpy.save(tensors, metadata={"format": "pt"})
  )
