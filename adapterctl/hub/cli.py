"""``adapterctl hub index|search|pull|push``."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Entry point the top-level CLI dispatches ``adapterctl hub ...`` to."""
    raise NotImplementedError("adapterctl hub is being written (issue 6)")
