"""What the vLLM engine decides before vLLM sees anything: options, model shape, KV sizing,
request validation."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from slinfer.services.worker.engine.base import InvalidRequest, SamplingParams

# vLLM 0.32's CPU attention backend (CPU_ATTN.get_supported_head_sizes). An unsupported head
# size is only detected at the first forward pass there, so we check at construction.
CPU_ATTENTION_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True, slots=True)
class VllmOptions:
    """vLLM knobs the worker may set; validated once at engine creation."""

    block_size: int | None = None  # tokens per KV block; None: 32 on CPU, 16 on CUDA
    dtype: str = "auto"  # "auto": float32 on CPUs without AVX512-BF16/AMX, else bfloat16
    max_model_len: int | None = None  # None: min(model context, KV capacity)
    max_num_seqs: int = 64
    enforce_eager: bool = True  # no torch.compile / CUDA graphs: fast start, two per process
    enable_prefix_caching: bool = False
    seed: int = 0
    # kvcached only: virtual KV reserved at start, as a multiple of the initial capacity.
    kvcached_virtual_factor: int = 4

    def validate(self) -> None:
        if self.block_size is not None and (self.block_size <= 0 or self.block_size % 16):
            raise ValueError(f"block_size must be a positive multiple of 16, got {self.block_size}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype}")
        if self.max_model_len is not None and self.max_model_len <= 1:
            raise ValueError(f"max_model_len must be > 1, got {self.max_model_len}")
        if self.max_num_seqs <= 0:
            raise ValueError(f"max_num_seqs must be > 0, got {self.max_num_seqs}")
        if self.kvcached_virtual_factor < 1:
            raise ValueError("kvcached_virtual_factor must be >= 1")


@dataclass(frozen=True, slots=True)
class ModelShape:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    weights_file_bytes: int

    @classmethod
    def read(cls, model_dir: Path) -> ModelShape:
        config_path = model_dir / "config.json"
        if not config_path.is_file():
            raise ValueError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
        config = json.loads(config_path.read_text())
        config = config.get("text_config", config)
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        return cls(
            num_layers=config["num_hidden_layers"],
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            vocab_size=config["vocab_size"],
            max_position_embeddings=config.get("max_position_embeddings", 2048),
            weights_file_bytes=sum(p.stat().st_size for p in model_dir.glob("*.safetensors")),
        )

    def kv_bytes_per_token(self, dtype: str) -> int:
        """K and V for every layer (standard attention; vLLM reports the exact figure later)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * _DTYPE_BYTES[dtype]

    def check_cpu_attention(self) -> None:
        if self.head_dim not in CPU_ATTENTION_HEAD_SIZES:
            raise InvalidRequest(
                f"vLLM's CPU attention does not support head_dim={self.head_dim} "
                f"(supported: {', '.join(map(str, CPU_ATTENTION_HEAD_SIZES))}); "
                "serve this model with the PyTorch engine"
            )


def resolve_dtype(dtype: str, device: str) -> str:
    """Pick one dtype for weights and KV. On CPU, bf16 only where the CPU computes it natively
    (AVX512-BF16 or AMX); elsewhere it is emulated and slower than float32."""
    if dtype != "auto":
        return dtype
    if device == "cuda":
        return "bfloat16"
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if native_bf16 else "float32"


def kv_request_bytes(capacity_tokens: int, block_size: int, bytes_per_token: int) -> int:
    """vLLM's kv_cache_memory_bytes that yields at least `capacity_tokens` usable slots:
    whole blocks, plus vLLM's null block (block 0), which never holds KV."""
    blocks = -(-capacity_tokens // block_size) + 1
    return blocks * block_size * bytes_per_token


def validate_sampling(sampling: SamplingParams) -> None:
    """Everything vLLM would refuse (or silently accept wrongly), refused before it gets there."""
    if not math.isfinite(sampling.temperature) or not math.isfinite(sampling.top_p):
        raise InvalidRequest("temperature and top_p must be finite numbers")
    sampling.validate()
    if sampling.deterministic:
        raise InvalidRequest(
            "deterministic decoding is offered by the torch engine only; deploy the model with "
            "engine torch, or drop `deterministic`"
        )
    if not isinstance(sampling.max_tokens, int) or isinstance(sampling.max_tokens, bool):
        raise InvalidRequest(f"max_tokens must be an integer, got {sampling.max_tokens!r}")
    if any(not isinstance(s, str) or not s for s in sampling.stop):
        raise InvalidRequest("stop strings must be non-empty strings")
    if sampling.seed is not None and (
        not isinstance(sampling.seed, int) or not 0 <= sampling.seed <= _MAX_SEED
    ):
        raise InvalidRequest(f"seed must be an integer in [0, 2^63), got {sampling.seed!r}")
