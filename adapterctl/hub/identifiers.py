"""Adapter identifiers, AdapterHub's form: ``task/subtask@org``, ``subtask@org``, ``...:version``.

``hf:owner/repo[@revision]`` names an adapter repo on the HF Hub instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_PART = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"
_HUB_ID = re.compile(rf"^(?:(?P<task>{_PART})/)?(?P<subtask>{_PART})(?:@(?P<org>{_PART}))?(?::(?P<version>{_PART}))?$")
# A branch, tag or commit: '/'-separated plain names, so no '..' (it names a cache folder).
_REVISION = r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*"
_HF_ID = re.compile(rf"^hf:(?P<repo>{_PART}/{_PART})(?:@(?P<revision>{_REVISION}))?$")
FORMS = "task/subtask@org, subtask@org or task/subtask@org:version (or hf:owner/repo[@revision])"


@dataclass(frozen=True)
class Identifier:
    subtask: str
    task: str | None = None
    org: str | None = None
    version: str | None = None

    def __str__(self):
        return (f"{self.task + '/' if self.task else ''}{self.subtask}{'@' + self.org if self.org else ''}"
                f"{':' + self.version if self.version else ''}")


@dataclass(frozen=True)
class HfIdentifier:
    repo: str
    revision: str | None = None


def parse(text: str) -> Identifier | HfIdentifier | None:
    """The identifier ``text`` spells, or None if it is not one (a path, say)."""
    m = _HF_ID.match(text.strip())
    if m and ".." not in text:
        return HfIdentifier(m["repo"], m["revision"])
    m = _HUB_ID.match(text.strip())
    return Identifier(m["subtask"], m["task"], m["org"], m["version"]) if m else None


def default_name(source, folder) -> str:
    """The name of an adapter whose files name none (PEFT's do not): its folder's, or for one
    fetched by identifier the HF repo's or the subtask's, since its cache folder is named after
    a commit or a version."""
    ident = None if Path(source).is_dir() else parse(str(source))
    if isinstance(ident, HfIdentifier):
        return ident.repo.rsplit("/", 1)[-1]
    return ident.subtask if ident is not None else Path(folder).name
