"""Small helpers shared by the engine tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from slinfer.services.worker.engine.base import (
    EngineRequest,
    FinishReason,
    IterationResult,
    RequestOutput,
    SamplingParams,
)
from slinfer.services.worker.engine.torch_engine import TorchEngine
from slinfer.services.worker.profiler import ProfileCache


def greedy(max_tokens: int, stop: tuple[str, ...] = ()) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, stop=stop)


def request(
    rid: str, prompt: list[int], params: SamplingParams, resumed: tuple[int, ...] = ()
) -> EngineRequest:
    return EngineRequest(rid, tuple(prompt), params, resumed_token_ids=resumed)


@dataclass
class Result:
    outputs: list[RequestOutput] = field(default_factory=list)

    @property
    def tokens(self) -> list[int]:
        return [t for o in self.outputs for t in o.new_token_ids]

    @property
    def text(self) -> str:
        return "".join(o.text_delta for o in self.outputs)

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.outputs[-1].finish_reason if self.outputs else None


def collect(results: dict[str, Result], iteration: IterationResult) -> None:
    for out in iteration.outputs:
        results.setdefault(out.request_id, Result()).outputs.append(out)


def run_to_end(engine: TorchEngine, *requests: EngineRequest) -> dict[str, Result]:
    """Admit the requests together and step until the engine is idle."""
    for req in requests:
        engine.add_request(req)
    results: dict[str, Result] = {}
    while engine.has_work():
        collect(results, engine.step())
    return results


def understate_cached_tables(cache: ProfileCache) -> dict[str, dict]:
    """Rewrite every cached table 100x faster than measured; returns them by key.

    A cached table is measured again when the engine now runs its first prefill point, or the
    batch-1 decode after it, in under half the tabled time (calibration.STALE_RATIO: it was
    measured on a busy machine).
    On a shared machine a first measurement can be that slow, so a test that wants a cache
    hit pins tables that cannot over-state the cost."""
    pinned = {}
    for path in cache.root.glob("*.json"):
        tables = cache.get(path.stem)
        assert tables is not None
        fast = {
            "prefill_ms": [[n, ms / 100] for n, ms in tables["prefill_ms"]],
            "decode_ms": [[c, [[b, ms / 100] for b, ms in row]] for c, row in tables["decode_ms"]],
        }
        cache.put(path.stem, fast)
        pinned[path.stem] = fast
    return pinned
