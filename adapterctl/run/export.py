"""``adapterctl export run=<run folder> [out=<dir>]``: a run's adapter as a Hub-ready package."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    """Entry point the top-level CLI dispatches ``adapterctl export ...`` to."""
    raise NotImplementedError("adapterctl export is being written (issue 6)")
