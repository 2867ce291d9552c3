"""What the policies need to know about a model type (DESIGN.md §2–4; profiles README).

Memory figures, baseline concurrency caps and the GPU decode grant size, read from the shared
profiles file (`models.<model>.memory`, `exclusive_max_concurrency`, `shared2_max_concurrency`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from slinfer.policy.errors import ProfileNotFound
from slinfer.policy.types import DeviceKind

GIB = 1 << 30
KIB = 1 << 10

# Iterations per grant during GPU decode (artifact `get_recommend_quota_size`); prefill and CPU
# grants are always 1 iteration.
GPU_DECODE_GRANT: Mapping[str, int] = MappingProxyType(
    {"llama-3.2-3b": 4, "llama-2-7b": 2, "llama-3.1-8b": 2, "llama-2-13b": 1}
)

# Short names used by the trace tools and the paper's figures.
MODEL_ALIASES: Mapping[str, str] = MappingProxyType(
    {"3b": "llama-3.2-3b", "7b": "llama-2-7b", "8b": "llama-3.1-8b", "13b": "llama-2-13b"}
)


@dataclass(frozen=True, slots=True)
class ConcurrencyCaps:
    """Per-instance request caps of the ServerlessLLM baselines on one device label."""

    exclusive: int | None
    shared2: int | None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    weights_bytes: int
    kv_bytes_per_token: int
    gpu_block_tokens: int = 16
    cpu_block_tokens: int = 32
    cpu_kv_pool_bytes: int = 0
    gpu_decode_grant: int = 1
    caps: Mapping[tuple[DeviceKind, str], ConcurrencyCaps] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def __post_init__(self) -> None:
        if self.weights_bytes <= 0 or self.kv_bytes_per_token <= 0:
            raise ValueError(f"{self.name}: weights and KV bytes per token must be positive")
        if self.gpu_decode_grant < 1:
            raise ValueError(f"{self.name}: gpu_decode_grant must be >= 1")

    @classmethod
    def from_profile(cls, profile_json: Mapping[str, Any], model: str) -> ModelSpec:
        model = MODEL_ALIASES.get(model, model)
        try:
            entry = profile_json["models"][model]
            memory = entry["memory"]
        except KeyError as err:
            raise ProfileNotFound(f"no model {model!r} in the profiles") from err
        caps: dict[tuple[DeviceKind, str], ConcurrencyCaps] = {}
        for kind in DeviceKind:
            for label, table in entry.get(kind.value, {}).items():
                caps[(kind, label)] = ConcurrencyCaps(
                    table.get("exclusive_max_concurrency"), table.get("shared2_max_concurrency")
                )
        blocks = memory.get("block_size_tokens", {})
        return cls(
            name=model,
            weights_bytes=round(float(memory["weights_gb"]) * GIB),
            kv_bytes_per_token=round(float(memory["kv_kb_per_token"]) * KIB),
            gpu_block_tokens=int(blocks.get("gpu", 16)),
            cpu_block_tokens=int(blocks.get("cpu", 32)),
            cpu_kv_pool_bytes=round(float(memory.get("cpu_kv_pool_gb", 0)) * GIB),
            gpu_decode_grant=GPU_DECODE_GRANT.get(model, 1),
            caps=MappingProxyType(caps),
        )

    def block_tokens(self, kind: DeviceKind) -> int:
        return self.gpu_block_tokens if kind is DeviceKind.GPU else self.cpu_block_tokens

    def block_bytes(self, kind: DeviceKind) -> int:
        return self.block_tokens(kind) * self.kv_bytes_per_token

    def round_up_to_blocks(self, kv_bytes: float, kind: DeviceKind) -> int:
        block = self.block_bytes(kind)
        return math.ceil(kv_bytes / block) * block if kv_bytes > 0 else 0

    def concurrency_cap(self, kind: DeviceKind, label: str, shared: bool) -> int | None:
        caps = self.caps.get((kind, label))
        if caps is None:
            return None
        return caps.shared2 if shared else caps.exclusive
