"""Where the shared, read-only material (traces/, profiles/) lives.

A setting, not a path relative to this file (an installed package has no `../shared`):
`$SLINFER_SHARED` when set (the Makefile sets it); otherwise `shared/` beside the current
directory, as when commands run from the repository's root with `../shared` next to it.
Nothing from it is ever copied into the repository.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

SHARED_ENV = "SLINFER_SHARED"


class SharedNotFound(FileNotFoundError):
    """The shared material is not where the setting says."""


def shared_dir() -> Path:
    override = os.environ.get(SHARED_ENV)
    path = Path(override) if override else (Path.cwd() / ".." / "shared").resolve()
    if not path.is_dir():
        how = f"${SHARED_ENV}={override}" if override else f"no ${SHARED_ENV}, and {path}"
        raise SharedNotFound(
            f"shared traces/profiles not found ({how} is not a directory): set {SHARED_ENV} "
            "to the folder that holds traces/ and profiles/"
        )
    return path


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
