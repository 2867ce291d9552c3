"""transformers' own model as the engine tests' reference (tests/engine/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

# The tolerance is this many times the reference's own rounding error (its logits in the
# test's dtype against float64): the engine's error is of the same order, and a token can
# only flip where the two errors together exceed the top-2 margin.
ERROR_FACTOR = 4.0
MIN_TOLERANCE = 1e-4  # logits; floor for fp32, whose measured error can be ~1e-7


class Reference:
    """`build(arch, dtype)` makes the reference model (default: transformers' own, from the
    directory); `exact_dtype` is what the reference's rounding error is measured against
    (float64, or float32 where the build cannot run in float64: PyTorch's int8/int4 kernels)."""

    def __init__(
        self,
        model_dirs: dict[str, Path],
        build: Callable[[str, torch.dtype], torch.nn.Module] | None = None,
        exact_dtype: torch.dtype = torch.float64,
    ) -> None:
        self._dirs = model_dirs
        self._build = build
        self.exact_dtype = exact_dtype
        self._models: dict[tuple[str, torch.dtype], torch.nn.Module] = {}
        self._memo: dict[tuple, list[int]] = {}
        self.checked = self.exact = 0  # positions checked; those decided beyond the tolerance

    def path(self, arch: str) -> Path:
        return self._dirs[arch]

    def model(self, arch: str, dtype: torch.dtype) -> torch.nn.Module:
        key = (arch, dtype)
        if key not in self._models:
            from transformers import AutoModelForCausalLM

            self._models[key] = (
                self._build(arch, dtype)
                if self._build is not None
                else AutoModelForCausalLM.from_pretrained(
                    self._dirs[arch], dtype=dtype, local_files_only=True
                )
            ).eval()
        return self._models[key]

    def generate(self, arch: str, prompt: Sequence[int], n: int, dtype: torch.dtype) -> list[int]:
        """transformers' greedy continuation (sdpa attention, DynamicCache), cached."""
        key = (arch, tuple(prompt), n, dtype)
        if key not in self._memo:
            ids = torch.tensor([list(prompt)])
            with torch.inference_mode():
                out = self.model(arch, dtype).generate(
                    ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n
                )
            self._memo[key] = out[0, len(prompt) :].tolist()
        return self._memo[key]

    def logits(self, arch: str, ids: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model(arch, dtype)(torch.tensor([list(ids)]))
        return out.logits[0].double()

    def assert_greedy(
        self,
        arch: str,
        prompt: Sequence[int],
        got: Sequence[int],
        max_tokens: int,
        dtype: torch.dtype,
    ) -> None:
        assert got, "no tokens"
        eos = self._eos(arch)
        assert all(t not in eos for t in got[:-1]), "generation went on after EOS"
        assert len(got) == max_tokens or got[-1] in eos, (
            f"{len(got)} tokens of {max_tokens}, last {got[-1]} is not EOS"
        )
        # Teacher-forced: the reference's logits for every position, given the engine's own
        # tokens before it (one forward pass).
        ids = [*prompt, *got[:-1]]
        rows = slice(len(prompt) - 1, len(ids))
        logits = self.logits(arch, ids, dtype)[rows]
        exact = self.logits(arch, ids, self.exact_dtype)[rows]
        tolerance = max(ERROR_FACTOR * float((logits - exact).abs().max()), MIN_TOLERANCE)
        best = logits.max(dim=-1).values
        chosen = logits[torch.arange(len(got)), torch.tensor(list(got))]
        short = (best - chosen > tolerance).nonzero().flatten().tolist()
        if short:
            k = short[0]
            gap = float(best[k] - chosen[k])
            raise AssertionError(
                f"position {k}: token {got[k]} is {gap:.4f} below the reference's best "
                f"{int(logits[k].argmax())} (tolerance {tolerance:.4f})"
            )
        top2 = logits.topk(2, dim=-1).values
        self.checked += len(got)
        self.exact += int(((top2[:, 0] - top2[:, 1]) > tolerance).sum())

    def _eos(self, arch: str) -> set[int]:
        config = self.model(arch, torch.float32).generation_config
        eos = config.eos_token_id
        return set(eos if isinstance(eos, list) else [] if eos is None else [eos])
