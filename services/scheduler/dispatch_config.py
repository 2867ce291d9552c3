"""The scheduler's settings (flags of `python -m slinfer.services.scheduler`).

The policy's constants are one `PolicyConfig` (slinfer/policy/config.py), which the scheduler
also publishes for the workers' arbiters and the consolidator (common/policy_config.py); the
rest are the live driver's own: the system, the default KV pool of a new instance, timeouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from slinfer.policy import PolicyConfig, SystemName

# The live scheduler's policy defaults, where they differ from the artifact's (the simulator
# keeps those): the small models served here have short contexts and answers, so L_min 4096
# and a prior Ō of 512 tokens would reserve far more KV than they ever use (DESIGN.md §3
# takes both from the artifact's 7B-13B models). One config, threaded to every part.
LIVE_POLICY = PolicyConfig(l_min_tokens=1024, prior_output_tokens=128.0)


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    system: SystemName = SystemName.SLINFER
    policy: PolicyConfig = LIVE_POLICY
    default_kv_capacity_tokens: int = 4096
    load_timeout_s: float = 300.0
    rpc_timeout_s: float = 10.0
    # Bounded churn: at most this many instances of one model load at once; a request that
    # would start another waits for them (docs/RELIABILITY.md).
    max_loads_per_model: int = 4
    # A request re-dispatched after its worker died (or resumed by its client) waits at least
    # this long for a new place before RESOURCE_EXHAUSTED: its stream is already under way.
    failover_patience_s: float = 30.0

    def __post_init__(self) -> None:
        if self.load_timeout_s <= 0 or self.rpc_timeout_s <= 0:
            raise ValueError("load_timeout_s and rpc_timeout_s must be > 0")
        if self.max_loads_per_model < 1 or self.failover_patience_s < 0:
            raise ValueError("max_loads_per_model must be >= 1, failover_patience_s >= 0")
        if self.default_kv_capacity_tokens <= 0:
            raise ValueError("default_kv_capacity_tokens must be > 0")
