"""What the control plane needs to know about a model directory, read without loading it."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slinfer.services.common.errors import FailedPrecondition, InvalidArgument
from slinfer.services.common.records import NodeRecord

FP32_BYTES = 4
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
MAX_PATH_CHARS = 4096
MAX_NAME_CHARS = 255
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit
MAX_JSON_BYTES = 16 << 20  # config.json, tokenizer_config.json


@dataclass(frozen=True, slots=True)
class ModelDir:
    path: Path
    architecture: str
    max_model_len: int
    num_layers: int
    num_kv_heads: int
    head_dim: int
    parameters: int
    has_chat_template: bool
    vocab_size: int

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    def weights_bytes(self, dtype_bytes: int) -> int:
        return self.parameters * dtype_bytes

    def estimate_bytes(self, kv_tokens: int, dtype_bytes: int = FP32_BYTES) -> int:
        """Weights + KV before any engine has loaded it, at `dtype_bytes` per element (a
        node's engine dtype, published in its record; default fp32, the widest dtype engines
        pick on CPUs); the real figures replace it once an instance reports them."""
        return self.weights_bytes(dtype_bytes) + kv_tokens * self.kv_bytes_per_token(dtype_bytes)

    def upper_bound_bytes(self, kv_tokens: int) -> int:
        return self.estimate_bytes(kv_tokens, FP32_BYTES)


def node_dtype_bytes(node: NodeRecord) -> int:
    """Bytes per element of a node's engines, from its etcd record (workers publish
    `dtype_bytes`); fp32, the widest, for a record without it."""
    return node.dtype_bytes or FP32_BYTES


def _safetensors_parameters(path: Path) -> int:
    """Count parameters from safetensors headers (8-byte length + JSON), no tensor reads,
    checking each file's integrity on the way: a header that does not parse, tensors whose
    byte ranges fall outside the file, overlap or do not match their dtype and shape, or a
    file whose size is not what its header says (truncated). FailedPrecondition names the
    file and what is wrong; nothing is loaded."""
    total = 0
    for f in sorted(path.glob("*.safetensors")):
        total += _check_safetensors(f)
    return total


def _check_safetensors(f: Path) -> int:
    def bad(why: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"weights file {f} is corrupt or truncated ({why}); copy it again from its source"
        )

    size = f.stat().st_size
    if size < 8:
        raise bad(f"{size} bytes, shorter than a header")
    with f.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise bad(f"header length {n} does not fit the file's {size} bytes")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data_size, total, ranges = size - 8 - n, 0, []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = meta["dtype"], [int(d) for d in meta["shape"]]
            start, end = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"tensor {name!r} has no valid dtype/shape/data_offsets") from exc
        count = 1
        for dim in shape:
            if dim < 0:
                raise bad(f"tensor {name!r} has a negative dimension")
            count *= dim
        width = _DTYPE_BYTES.get(str(dtype))
        if width is None:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not 0 <= start <= end <= data_size or end - start != count * width:
            raise bad(f"tensor {name!r} bytes [{start}, {end}) do not match its shape or the file")
        ranges.append((start, end))
        total += count
    ranges.sort()
    covered = 0
    for start, end in ranges:
        if start < covered:
            raise bad("tensors overlap")
        covered = end
    if covered != data_size:
        raise bad(f"the header describes {covered} bytes of tensors, the file holds {data_size}")
    return total


def check_path(path_str: str) -> None:
    """InvalidArgument for a path that is not a plausible local path at all."""
    if not path_str:
        raise InvalidArgument("path is required: a local Hugging Face-format model directory")
    if "\x00" in path_str:
        raise InvalidArgument("path must not contain NUL characters")
    if len(path_str) > MAX_PATH_CHARS:
        raise InvalidArgument(
            f"path is {len(path_str)} characters long; paths are at most {MAX_PATH_CHARS}"
        )
    long = next((p for p in Path(path_str).parts if len(p.encode()) > MAX_NAME_CHARS), None)
    if long is not None:
        raise InvalidArgument(
            f"path component {long[:40]!r}... is longer than {MAX_NAME_CHARS} bytes"
        )


def _read_json(f: Path) -> Any:
    if f.stat().st_size > MAX_JSON_BYTES:
        raise FailedPrecondition(f"{f} is over {MAX_JSON_BYTES >> 20} MiB; is it the right file?")
    try:
        return json.loads(f.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FailedPrecondition(f"{f} is not valid JSON: {exc}") from exc


def inspect_model_dir(path_str: str) -> ModelDir:
    """Validate a Hugging Face-format model directory; raise with what is missing."""
    check_path(path_str)
    try:
        return _inspect(Path(path_str).expanduser())
    except (InvalidArgument, FailedPrecondition):
        raise
    except (OSError, ValueError, TypeError, OverflowError, MemoryError, struct.error) as exc:
        raise FailedPrecondition(
            f"cannot read the model directory {path_str[:200]}: {type(exc).__name__}: {exc}"
        ) from exc


def _inspect(path: Path) -> ModelDir:
    if not path.exists():
        raise InvalidArgument(f"model path {path} does not exist on this host")
    if not path.is_dir():
        raise InvalidArgument(f"model path {path} is not a directory")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FailedPrecondition(f"{path} is not a model directory: config.json is missing")
    if not any(path.glob("*.safetensors")):
        raise FailedPrecondition(f"{path} has no *.safetensors weights")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer.model").is_file():
        raise FailedPrecondition(f"{path} has no tokenizer (tokenizer.json)")
    config = _read_json(config_file)
    if not isinstance(config, dict):
        raise FailedPrecondition(f"{config_file} is not a JSON object")
    archs = config.get("architectures") or [config.get("model_type", "unknown")]
    heads = int(config.get("num_attention_heads", 1))
    hidden = int(config.get("hidden_size", 0))
    head_dim = int(config.get("head_dim") or (hidden // heads if heads else 0))
    tok_cfg = path / "tokenizer_config.json"
    chat = False
    if tok_cfg.is_file():
        tok = _read_json(tok_cfg)
        chat = bool(tok.get("chat_template")) if isinstance(tok, dict) else False
    chat = chat or (path / "chat_template.jinja").is_file()
    params = _safetensors_parameters(path)
    return ModelDir(
        path=path.resolve(),
        architecture=str(archs[0]),
        max_model_len=int(config.get("max_position_embeddings", 2048)),
        num_layers=int(config.get("num_hidden_layers", 0)),
        num_kv_heads=int(config.get("num_key_value_heads", heads)),
        head_dim=head_dim,
        parameters=params,
        has_chat_template=chat,
        vocab_size=int(config.get("vocab_size", 0)),
    )
