"""The `slinfer` command line (entry point `slinfer.cli:main`)."""

from slinfer.cli.main import main

__all__ = ["main"]
