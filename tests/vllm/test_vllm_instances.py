"""Several VllmEngines in one worker process, taking turns like the arbiter makes them."""

from __future__ import annotations

import pytest

from slinfer.services.worker.engine.base import EngineRequest, NotLoaded

from .conftest import KV_TOKENS, PROMPT, THREADS, fp32, greedy, run_to_end, tokens

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def two_engines(vllm_importable, vllm_models):
    from slinfer.services.worker.engine.vllm_engine import VllmEngine

    engines = {
        name: VllmEngine(path, kv_capacity_tokens=KV_TOKENS, num_threads=THREADS, options=fp32())
        for name, path in vllm_models.items()
    }
    yield engines
    for engine in engines.values():
        engine.close()


def _solo(engine, rid: str) -> list[int]:
    prompt = tuple(engine.encode(PROMPT))
    return tokens(run_to_end(engine, EngineRequest(rid, prompt, greedy(12)))[rid])


def test_two_models_alternate_iterations(two_engines) -> None:
    llama, qwen = two_engines["llama"], two_engines["qwen2"]
    solo = {"llama": _solo(llama, "l0"), "qwen2": _solo(qwen, "q0")}
    assert solo["llama"] != solo["qwen2"]  # different random weights

    produced: dict[str, list[int]] = {"llama": [], "qwen2": []}
    for name, engine in two_engines.items():
        engine.add_request(EngineRequest(name, tuple(engine.encode(PROMPT)), greedy(12)))
    while any(e.has_work() for e in two_engines.values()):
        for name, engine in two_engines.items():  # one iteration each, in turn
            if engine.has_work():
                for out in engine.step().outputs:
                    produced[name].extend(out.new_token_ids)
    assert produced == solo


def test_offload_then_load_serves_again_while_the_other_keeps_serving(two_engines) -> None:
    import torch

    llama, qwen = two_engines["llama"], two_engines["qwen2"]
    before = _solo(llama, "before")
    qwen_before = _solo(qwen, "qb")

    llama.offload()
    stats = llama.stats()
    assert not stats.loaded and stats.kv_bytes_allocated == 0 and stats.weights_bytes == 0
    with pytest.raises(NotLoaded):
        llama.add_request(EngineRequest("x", (1, 2), greedy()))
    assert llama.encode(PROMPT)  # the tokenizer stays with the instance
    # Releasing one engine must leave the shared distributed group to the other one.
    assert _solo(qwen, "qa") == qwen_before

    rng_state = torch.get_rng_state()
    llama.load()
    assert llama.stats().loaded and llama.startup_s > 0
    # vLLM seeds the global RNGs when it builds an engine; the worker's must be left alone.
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert _solo(llama, "after") == before
    # vLLM's CPU worker turns torch.set_num_threads into a no-op for the whole process;
    # the engine restores it so that a TorchEngine next to it keeps its thread setting.
    assert torch.set_num_threads is torch._C.set_num_threads
