"""The adapter Hub: YAML cards, an index, identifiers, backends, verified downloads."""

from __future__ import annotations


def resolve(identifier: str):
    raise NotImplementedError("hub identifiers are being written (issue 6)")
