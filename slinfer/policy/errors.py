"""Typed errors of the policy layer (STYLE.md: domain code raises typed errors)."""

from __future__ import annotations


class PolicyError(Exception):
    """Base class of policy errors."""


class ProfileNotFound(PolicyError, KeyError):
    """The profile table has no entry for this model / device kind / label."""


class InvalidProfile(PolicyError, ValueError):
    """A profile table is malformed (empty, unsorted, non-positive times)."""


class UnknownSystem(PolicyError, ValueError):
    """No system of that name is registered."""
