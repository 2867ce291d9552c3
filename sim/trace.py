"""Trace replay input (format: ../shared/traces/README.md).

A trace is a JSON list of functions (one deployed model each) with arrival `timestamps` and
per-arrival `input`/`output` token counts. The paper's load levels take the first k functions
of each group of 8 (k = 2, 4, 8 → 32, 64, 128 models). `duration_s` keeps arrivals at or before
that time (as the artifact's test driver); `rate_scale` divides arrival times (2.0 = twice the
arrival rate, over half the span).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


class TraceError(ValueError):
    """The trace file or the requested selection is not usable."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    index: int  # position in arrival order
    function: int  # function (model) index in the file
    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Trace:
    name: str
    functions: tuple[int, ...]
    requests: tuple[TraceRequest, ...]
    duration_s: float

    @property
    def models(self) -> int:
        return len(self.functions)


_NAME = re.compile(r"^azure_\d+_\d+_(\d+)_(\d+)_\d+")


def group_size_of(path: Path, n_functions: int) -> int:
    """Group size from the file name (`azure_{start}_{end}_{count}_{group}_{seed}…`), else 8."""
    match = _NAME.match(path.stem)
    if match and int(match.group(1)) == n_functions:
        return max(int(match.group(2)), 1)
    return 8 if n_functions % 8 == 0 else 1


def trace_shape(path: Path) -> tuple[int, int]:
    """(functions, group size) of a trace file."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise TraceError(f"cannot read trace {path}: {err}") from err
    if not isinstance(raw, list) or not raw:
        raise TraceError(f"{path}: expected a non-empty JSON list of functions")
    return len(raw), group_size_of(path, len(raw))


def model_counts(n_functions: int, group_size: int) -> list[int]:
    """The model counts `select_functions` accepts: k functions of every group, k = 1…size."""
    if group_size <= 1:
        return list(range(1, n_functions + 1))
    groups = n_functions // group_size
    return [k * groups for k in range(1, group_size + 1)]


def select_functions(n_functions: int, models: int | None, group_size: int) -> tuple[int, ...]:
    """Indices of the first k functions of each group (or the first `models` if ungrouped)."""
    if models is None or models == n_functions:
        return tuple(range(n_functions))
    if not 0 < models <= n_functions:
        raise TraceError(f"models must be in 1..{n_functions}, got {models}")
    if group_size <= 1:
        return tuple(range(models))
    groups = n_functions // group_size
    if models % groups:
        raise TraceError(
            f"{models} models is not a whole number per group ({groups} groups of {group_size})"
        )
    k = models // groups
    return tuple(i for i in range(groups * group_size) if i % group_size < k)


def load_trace(
    path: Path,
    models: int | None = None,
    duration_s: float | None = None,
    rate_scale: float = 1.0,
) -> Trace:
    if rate_scale <= 0:
        raise TraceError(f"rate_scale must be > 0, got {rate_scale}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise TraceError(f"cannot read trace {path}: {err}") from err
    if not isinstance(raw, list) or not raw:
        raise TraceError(f"{path}: expected a non-empty JSON list of functions")
    chosen = select_functions(len(raw), models, group_size_of(path, len(raw)))
    rows: list[tuple[float, int, int, int]] = []
    for fn in chosen:
        entry = raw[fn]
        stamps, ins, outs = entry["timestamps"], entry["input"], entry["output"]
        if not len(stamps) == len(ins) == len(outs):
            raise TraceError(f"{path}: function {fn} has ragged timestamps/input/output")
        for t, i, o in zip(stamps, ins, outs, strict=True):
            if duration_s is not None and t > duration_s:
                break
            rows.append((float(t) / rate_scale, fn, max(int(i), 1), max(int(o), 1)))
    rows.sort()
    requests = tuple(TraceRequest(n, fn, t, i, o) for n, (t, fn, i, o) in enumerate(rows))
    if duration_s is not None:
        span = duration_s / rate_scale
    else:
        span = max((r[0] for r in rows), default=0.0)
    return Trace(path.name, chosen, requests, span)
