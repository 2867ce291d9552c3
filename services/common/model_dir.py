"""What the control plane needs to know about a model directory, read without loading it."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from slinfer.services.common.errors import FailedPrecondition, InvalidArgument

FP32_BYTES = 4
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I8": 1, "U8": 1}


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

    def upper_bound_bytes(self, kv_tokens: int) -> int:
        """Weights + KV before any engine has loaded it: fp32, the widest dtype engines pick
        on CPUs; the real figures replace it once an instance reports them."""
        return self.weights_bytes(FP32_BYTES) + kv_tokens * self.kv_bytes_per_token(FP32_BYTES)


def _safetensors_parameters(path: Path) -> int:
    """Count parameters from safetensors headers (8-byte length + JSON), no tensor reads."""
    total = 0
    for f in sorted(path.glob("*.safetensors")):
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in meta["shape"]:
                count *= int(dim)
            total += count
    return total


def inspect_model_dir(path_str: str) -> ModelDir:
    """Validate a Hugging Face-format model directory; raise with what is missing."""
    if not path_str:
        raise InvalidArgument("path is required: a local Hugging Face-format model directory")
    path = Path(path_str).expanduser()
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
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise FailedPrecondition(f"{config_file} is not valid JSON: {exc}") from exc
    archs = config.get("architectures") or [config.get("model_type", "unknown")]
    heads = int(config.get("num_attention_heads", 1))
    hidden = int(config.get("hidden_size", 0))
    head_dim = int(config.get("head_dim") or (hidden // heads if heads else 0))
    tok_cfg = path / "tokenizer_config.json"
    chat = False
    if tok_cfg.is_file():
        chat = bool(json.loads(tok_cfg.read_text()).get("chat_template"))
    chat = chat or (path / "chat_template.jinja").is_file()
    try:
        params = _safetensors_parameters(path)
    except (OSError, ValueError, KeyError, struct.error) as exc:
        raise FailedPrecondition(f"cannot read safetensors headers in {path}: {exc}") from exc
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
