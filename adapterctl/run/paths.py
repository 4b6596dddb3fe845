"""Where the configs and recipes are: found without importing Hydra, so ``adapterctl recipes``
and ``--help`` answer at once."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import AdapterConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    """``$ADAPTERCTL_CONF``, else the repository's ``conf/`` next to the package (an editable
    install keeps the package inside the repository, so this works from any working folder)."""
    path = Path(os.environ.get("ADAPTERCTL_CONF") or REPO_ROOT / "conf")
    if not (path / "train.yaml").is_file():
        raise AdapterConfigError(
            f"no adapterctl configs in {path}; install adapterctl editable from its repository (pip install -e .) "
            "or point ADAPTERCTL_CONF at its conf/ folder"
        )
    return path


def recipes_dir() -> Path:
    return Path(os.environ.get("ADAPTERCTL_RECIPES") or REPO_ROOT / "recipes")


