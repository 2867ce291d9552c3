"""Fixtures shared by the whole suite: a real etcd process and tiny real-architecture models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from slinfer.services.common.etcd_process import EtcdProcess, start_etcd

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdProcess]:
    """A private etcd on loopback per test module (fresh state, real process)."""
    proc = start_etcd()
    yield proc
    proc.stop()


@pytest.fixture(scope="session", autouse=True)
def openvino_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Conversions of the session's models go to a session directory, not the user's cache
    (SmolLM2's, when a test converts it, too: a few seconds per format)."""
    import os

    root = tmp_path_factory.mktemp("openvino-cache")
    before = os.environ.get("SLINFER_OV_CACHE")
    os.environ["SLINFER_OV_CACHE"] = str(root)
    yield root
    if before is None:
        os.environ.pop("SLINFER_OV_CACHE", None)
    else:
        os.environ["SLINFER_OV_CACHE"] = before


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight Llama and Qwen2 models with offline tokenizers, built once per session."""
    from slinfer.models import build_random_model

    root = tmp_path_factory.mktemp("models")
    return {
        "llama": build_random_model("llama", root / "tiny-llama", seed=0),
        "qwen2": build_random_model("qwen2", root / "tiny-qwen2", seed=1),
    }


@pytest.fixture(scope="session")
def profile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Workers' measured perf tables for this session (not the user's cache)."""
    return tmp_path_factory.mktemp("profiles")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers tell the truth: a test that starts etcd (the fixture, or any test under
    tests/live) carries `live`, so `-m "not live"` runs nothing that needs services."""
    unmarked = [
        item.nodeid
        for item in items
        if item.get_closest_marker("live") is None
        and ("etcd" in getattr(item, "fixturenames", ()) or "tests/live/" in item.nodeid)
    ]
    if unmarked:
        raise pytest.UsageError(f"tests that start etcd or services need `live`: {unmarked}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move everything imported so far (torch, transformers, ...) out of the collector's
    sight: engines run `gc.collect()` when they offload, and a full collection over those
    ~400k objects costs 0.25-1 s per engine on this machine."""
    import gc

    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import gc

    gc.unfreeze()  # let interpreter shutdown release what the session froze
