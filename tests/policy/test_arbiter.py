"""EDF iteration arbiter with multi-iteration grants (DESIGN.md §2)."""

from __future__ import annotations

from slinfer.policy.arbiter import Arbiter, Grant, grant_iterations
from slinfer.policy.config import PolicyConfig
from slinfer.policy.types import DeviceKind
from tests.policy.factories import device, instance, req, spec

EXACT = PolicyConfig(slo_margin=1.0)


def test_least_headroom_wins() -> None:
    # a's request is due at 0 + 1 + 0.25·10 = 3.5; b's at 1 + 1 + 0.25·2 = 2.5.
    a = instance("a", (req("x", arrival_s=0.0, output_tokens=10),))
    b = instance("b", (req("y", arrival_s=1.0, output_tokens=2),))
    assert Arbiter(EXACT).decide(device(a, b), now=2.0) == Grant("b", 2)


def test_instance_with_most_urgent_request_even_if_others_relaxed() -> None:
    a = instance("a", (req("x", arrival_s=5.0), req("late", arrival_s=0.0)))
    b = instance("b", (req("y", arrival_s=1.0),))
    assert Arbiter(EXACT).decide(device(a, b), now=1.0) == Grant("a", 2)


def test_non_runnable_and_empty_instances_are_skipped() -> None:
    a = instance("a", (req("x", arrival_s=0.0),), runnable=False)
    b = instance("b", ())
    c = instance("c", (req("z", arrival_s=3.0),))
    assert Arbiter(EXACT).decide(device(a, b, c), now=3.0) == Grant("c", 2)
    assert Arbiter(EXACT).decide(device(a, b), now=3.0) is None


def test_grant_sizes() -> None:
    decoding = (req("x", output_tokens=3),)
    three = instance("a", decoding, model=spec("llama-3.2-3b", grant=4))
    seven = instance("b", decoding, model=spec("llama-2-7b", grant=2))
    thirteen = instance("c", decoding, model=spec("llama-2-13b", grant=1))
    assert grant_iterations(three, DeviceKind.GPU) == 4
    assert grant_iterations(seven, DeviceKind.GPU) == 2
    assert grant_iterations(thirteen, DeviceKind.GPU) == 1
    assert grant_iterations(three, DeviceKind.CPU) == 1
    prefilling = instance("d", (req("p"),), prefill=("p",), model=spec(grant=4))
    assert grant_iterations(prefilling, DeviceKind.GPU) == 1


def test_grant_sizes_from_profiles() -> None:
    from slinfer.policy.model_spec import ModelSpec
    from slinfer.sim.paths import load_profiles

    profile = load_profiles()
    grants = {m: ModelSpec.from_profile(profile, m).gpu_decode_grant for m in ("3b", "7b", "13b")}
    assert grants == {"3b": 4, "7b": 2, "13b": 1}
