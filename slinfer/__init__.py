"""slinfer: serverless inference for many small private LLMs (SDK and CLI)."""

from slinfer.client import (
    AsyncClient,
    Chunk,
    Client,
    Completion,
    Result,
    SlinferError,
)

__all__ = ["AsyncClient", "Chunk", "Client", "Completion", "Result", "SlinferError"]
__version__ = "0.1.0"
