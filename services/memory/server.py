"""The memory service process (its mechanism arrives with issue 6; docs/ROADMAP.md)."""

from __future__ import annotations

from services.common.presence import PresenceService


def create(etcd: str, listen: str = "127.0.0.1:0") -> PresenceService:
    return PresenceService("memory", etcd, listen)
