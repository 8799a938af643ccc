"""The ``slmdeploy`` command: `main` is the console script's entry point."""

from __future__ import annotations

from slmdeploy.cli.app import main

__all__ = ["main"]
