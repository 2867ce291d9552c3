"""Where the shared, read-only material lives: `../shared` next to the repository, or
`$SLINFER_SHARED`. Nothing from it is ever copied into the repository."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    override = os.environ.get("SLINFER_SHARED")
    return Path(override) if override else (REPO_ROOT / ".." / "shared").resolve()


def profiles_path() -> Path:
    return shared_dir() / "profiles" / "slinfer_hardware_profiles.json"


def traces_dir() -> Path:
    return shared_dir() / "traces"


def default_trace() -> Path:
    return traces_dir() / "azure_1_30_128_8_0.json"


@lru_cache(maxsize=4)
def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_profiles(path: Path | None = None) -> dict[str, Any]:
    """The hardware profiles (cached; treat as read-only)."""
    data = _load_json(str(path or profiles_path()))
    assert isinstance(data, dict)
    return data
