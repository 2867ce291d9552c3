"""Lossless re-dispatch (DESIGN.md §1, §4): a preempted request continues its stream elsewhere.

The scheduler owns every request's stream. When a worker ends a stream with
FINISH_REASON_PREEMPTED, the dispatcher re-admits the request on another instance with every
token the client has received (`resumed_token_ids`); the engine recomputes their KV and
continues. What the client is promised, whatever the engines' numerics:

- every token reaches it exactly once: the resumed tokens are never sent again, and the
  stream ends after `max_tokens` tokens in all (or at EOS / a stop string);
- the text sent before the preemption stands, byte for byte, and the text that follows is
  that of an uninterrupted run with the same token ids. A worker may hold text back at the
  cut (an incomplete UTF-8 character, a suffix that could still become a stop string); the
  engine replays the resumed tokens through its text stream (detokenizer.py,
  `TextStream.resumed`), so the held-back text comes out with the tokens that complete it,
  and a stop string straddling the cut is found.

The continuation is token-for-token that of an uninterrupted greedy run only where the
recompute is bit-exact (same engine, dtype and batch composition); a prefill of the resumed
tokens on another instance may round differently from the decodes it replaces, and a greedy
near-tie may then break the other way. Nothing the client saw is regenerated, so nothing it
saw can be contradicted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from slinfer.policy import DispatchView
from slinfer.v1 import worker_pb2


@dataclass
class StreamProgress:
    """What the client has received so far, response by response."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    redispatches: int = 0
    finished: bool = False  # the worker finished the request (the last response was sent)
    preempted: bool = False  # the worker ended this submission PREEMPTED: re-dispatch it

    def accept(self, resp: worker_pb2.SubmitResponse) -> worker_pb2.SubmitResponse | None:
        """The response to forward (None: nothing in it for the client)."""
        if not resp.token_ids and not resp.text and not resp.finished:
            return None
        self.token_ids.extend(resp.token_ids)
        self.text += resp.text
        return resp

    def resume(self) -> tuple[int, ...]:
        """The tokens the next dispatch resumes from: all the client has."""
        self.redispatches += 1
        return tuple(self.token_ids)


def without_node(view: DispatchView, node_id: str) -> DispatchView:
    """The view with one node left out: a preempted request's room there went to the
    request that preempted it, so its re-dispatch looks elsewhere first."""
    devices = [d for d in view.devices.values() if d.node_id != node_id]
    return replace(
        view,
        devices=DispatchView.freeze_devices(devices),
        candidates=tuple(c for c in view.candidates if c.node_id != node_id),
    )
