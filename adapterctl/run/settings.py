"""Composing a command's config from ``conf/`` with Hydra, and turning Hydra's errors into
one line that names the fix.

We use Hydra's compose API rather than ``@hydra.main``: one console script serves several
commands, errors must stay one line, and multirun is a plain loop over the combinations
(see ``sweep``), so every job writes the same run folder as a single run.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import AdapterConfigError
from . import schema  # noqa: F401 - registers the trainer group's types with Hydra

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


# Keys spelt like a config group on the command line: ``adapter=<folder>`` in evaluate and
# predict names a folder, not an option of conf/adapter/, so it is read as ``adapter_path``.
PATH_KEYS = {"evaluate": {"adapter": "adapter_path"}, "predict": {"adapter": "adapter_path"}}

# Keys whose value is free text (``text="a gripping, funny film"``): quoted for Hydra, so a comma
# or an apostrophe is text, not a sweep or a syntax error. A list (``text=[...]``) stays a list.
FREE_TEXT_KEYS = {"predict": ("text",)}


def _quote_free_text(override: str) -> str:
    key, _, value = override.partition("=")
    if value.startswith(("[", "'", '"')):
        return override
    quote = "'" if "'" not in value else '"'
    return f"{key}={quote}{value.replace(quote, chr(92) + quote)}{quote}"


def load(command: str, overrides: list[str]) -> DictConfig:
    """The composed config of ``command`` (``conf/<command>.yaml``), recipe applied first."""
    overrides = recipe_overrides(overrides) + [o for o in overrides if not o.startswith("recipe=")]
    for key, renamed in PATH_KEYS.get(command, {}).items():
        overrides = [f"{renamed}={o.split('=', 1)[1]}" if o.startswith(f"{key}=") else o for o in overrides]
    overrides = [_quote_free_text(o) if o.split("=", 1)[0] in FREE_TEXT_KEYS.get(command, ()) else o for o in overrides]
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose(command, overrides=overrides)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as e:
        raise AdapterConfigError(explain(e, command)) from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def recipe_overrides(overrides: list[str]) -> list[str]:
    """A recipe is a whole run as plain YAML: group choices (``task: rte``) and values
    (``trainer: {epochs: 3}``); it becomes overrides the command line can still change."""
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("recipe=")]
    if not names:
        return []
    path = Path(names[-1])
    if not path.suffix:
        path = recipes_dir() / f"{names[-1]}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in recipes_dir().glob("*.yaml"))) or "none"
        raise AdapterConfigError(f"no recipe {names[-1]!r}; choose one of {known} (adapterctl recipes lists them)")
    data = yaml.safe_load(path.read_text()) or {}
    groups = {p.name for p in conf_dir().iterdir() if p.is_dir()}
    out = []
    for key, value in data.items():
        if key in groups and isinstance(value, str):
            out.append(f"{key}={value}")
        else:
            out += [f"{k}={_hydra_value(v)}" for k, v in _flatten(key, value)]
    return out


def _flatten(prefix: str, value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}", v)
    else:
        yield prefix, value


def _hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, dict, bool)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def sweep(overrides: list[str]) -> list[list[str]]:
    """Multirun: the cartesian product of comma-separated (sweep) overrides, in order."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise AdapterConfigError(f"cannot read the overrides: {_first_line(e)}") from None
    choices = []
    for raw, o in zip(overrides, parsed):
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([raw])
    return [list(combo) for combo in itertools.product(*choices)]


def explain(error: Exception, command: str) -> str:
    """One line naming the problem and the fix, for the errors users hit."""
    text = str(error)
    m = re.search(r"Could not find '([^'/]+)/([^']+)'.*?Available options in '[^']+':\n(.*?)(?:\nConfig search|$)",
                  text, re.S)
    if m:
        group, option, options = m.group(1), m.group(2), m.group(3).split()
        return f"unknown {group} {option!r}; choose one of: {', '.join(options)} ({group}=<name>)" + _did_you_mean(
            option, options)
    cause = f"{error.__cause__}"
    m = (re.search(r"Value '(.*)' of type '\w+' could not be converted to (\w+)\s+full_key: (\S+)", cause)
         or re.search(r"Value '(.*)' is not a valid (\w+) \(type \w+\)\s+full_key: (\S+)", cause))
    if m:  # a value of the wrong type for a key typed in run/schema.py
        value, kind, key = m.groups()
        return f"{key}={value!r} is not a valid {kind.lower()}; give {key}=<{kind.lower()}> (see conf/{key.split('.')[0]}/)"
    m = re.search(r"Could not override '([^']+)'.\s*To append", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if m:
        key = m.group(1)
        return f"unknown key {key!r} for `adapterctl {command}`{_key_hint(key, command)}"
    return f"bad configuration: {_first_line(error)}"


def _key_hint(key: str, command: str) -> str:
    """Suggest the nearest existing key, looked up in the composed default config."""
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = OmegaConf.to_container(compose(command), resolve=False)
    except HydraException:
        return ""
    keys = list(_flatten("", cfg))
    known = [k.lstrip(".") for k, _ in keys]
    return _did_you_mean(key, known) or f"; see conf/{command}.yaml for the keys (add a new one with +{key}=...)"


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
