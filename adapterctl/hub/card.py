"""Hub cards: one YAML file per adapter (task, backbone, architecture), listing its versions.

A card is the source of truth the index is built from and a pull verifies against, so it is
validated strictly: a JSON Schema for shape and types (errors name the field, e.g.
``backbone.hidden_size``), then the checks a schema cannot express (the config hash matches the
config, the default version exists, every name that becomes part of a file name is a plain
name). Cards are read with YAML's safe loader only (plain data, never objects).
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import yaml

from ..core.config import AdapterConfig, architecture_name, config_hash, load_config
from ..errors import AdapterConfigError
from .errors import CardError

# task, subtask, org, model type, architecture and version name files and folders in the hub
# and the cache: plain names, short enough that the file names they make stay under 255 bytes.
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$"
_NAME_RE = re.compile(NAME[1:-1])
PATH_FIELDS = (("task",), ("subtask",), ("org",), ("backbone", "model_type"), ("architecture", "name"),
               ("default_version",))
_STR = {"type": "string"}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader: the same rules, 10x faster
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_NAME = {"type": "string", "pattern": NAME}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "task", "subtask", "org", "backbone", "architecture", "author", "description",
                 "license", "default_version", "files"],
    "properties": {
        "type": {"enum": ["text_task", "text_lang"]},
        "task": _NAME,
        "subtask": _NAME,
        "org": _NAME,
        "dataset": _STR,
        "backbone": {
            "type": "object",
            "additionalProperties": False,
            "required": ["model_type", "model_name", "hidden_size"],
            "properties": {"model_type": _NAME, "model_name": _STR, "hidden_size": {"type": "integer", "minimum": 1},
                           "loaded_from": _STR},
        },
        "architecture": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "config_hash", "config"],
            "properties": {
                "name": _NAME,
                "config_hash": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "config": {"type": "object"},
            },
        },
        "head": {
            "type": "object",
            "additionalProperties": False,
            "required": ["type"],
            "properties": {"type": _STR, "labels": {"type": "array", "items": _STR}},
        },
        "author": _STR,
        "description": _STR,
        "citation": _STR,
        "license": {"type": "string", "minLength": 1},
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "default_version": _NAME,
        "files": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["version", "url", "sha256", "size"],
                "properties": {
                    "version": _NAME,
                    "url": {"type": "string", "minLength": 1},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "size": {"type": "integer", "minimum": 0},
                },
            },
        },
    },
}


@functools.cache
def _validator():
    import jsonschema  # only where a card is read (not for a search through an index)

    return jsonschema.Draft202012Validator(SCHEMA)


def _field(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(card)"


def _schema_problems(card) -> list[str]:
    problems = []
    for error in sorted(_validator().iter_errors(card), key=lambda e: list(map(str, e.absolute_path))):
        where = list(error.absolute_path)
        if error.validator == "required":
            missing = [f for f in error.validator_value if f not in error.instance]
            problems += [f"{_field(where + [f])}: required field is missing" for f in missing]
        elif error.validator == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            problems += [f"{_field(where + [f])}: unknown field" for f in extra]
        else:
            problems.append(f"{_field(where)}: {error.message}")
    return list(dict.fromkeys(problems))


def _semantic_problems(card: dict) -> list[str]:
    problems = []
    named = [(".".join(f), functools.reduce(dict.get, f, card)) for f in PATH_FIELDS]
    named += [(f"files[{i}].version", f["version"]) for i, f in enumerate(card["files"])]
    for field, value in named:
        if not _NAME_RE.fullmatch(value):  # the schema's $ lets a trailing newline through
            problems.append(f"{field}: {value!r} is not a plain name (letters, digits, _ . + -)")
    versions = [f["version"] for f in card["files"]]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        problems.append(f"files: version(s) {', '.join(duplicates)} listed more than once")
    if card["default_version"] not in versions:
        problems.append(f"default_version: {card['default_version']!r} is not among the files' versions {versions}")
    arch = card["architecture"]
    try:
        expected = config_hash(load_config(arch["config"]))
    except AdapterConfigError as e:
        problems.append(f"architecture.config: {e}")
    else:
        if arch["config_hash"] != expected:
            problems.append(f"architecture.config_hash: {arch['config_hash']} does not match the config ({expected})")
    return problems


def check_name(value: str, what: str) -> str:
    """``value`` if it may name a hub file (see ``NAME``), else a ``CardError`` naming ``what``."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise CardError(f"{what} {value!r} is not a plain name of up to 40 letters, digits and _ . + -; choose another")
    return value


def validate_card(card, source: str = "card") -> dict:
    """Return ``card`` if valid, else raise ``CardError`` listing every problem by field."""
    problems = _schema_problems(card)
    if not problems:
        problems = _semantic_problems(card)
    if problems:
        raise CardError(f"{source} is not a valid Hub card: " + "; ".join(problems)
                        + ". Fix these fields (see README, 'The Hub')")
    return card


def parse_card(text: str, source: str = "card") -> dict:
    try:
        card = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader: plain data only
    except yaml.YAMLError as e:
        raise CardError(f"{source} is not valid YAML: {e}") from None
    return validate_card(card, source)


def read_card(path: Path) -> dict:
    return parse_card(Path(path).read_text(encoding="utf-8"), str(path))


def dump_card(card: dict) -> str:
    return yaml.dump(card, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=100)


def architecture(config: AdapterConfig | dict) -> dict:
    """The card's ``architecture``: a readable name, AdapterHub's config hash, the config.

    The name is the preset the config equals, else the placement its method gives it
    (``pfeiffer[reduction_factor=8]`` is a ``pfeiffer``): search filters by name, the hash pins
    the exact config.
    """
    config = load_config(config)
    return {"name": architecture_name(config), "config_hash": config_hash(config), "config": config.to_dict()}


def is_model_id(name: str) -> bool:
    """Whether ``name`` reads as an HF Hub model id (``owner/name`` or ``name``) that another
    machine can load, rather than a path that exists only where the model was trained."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", name or "")) and not Path(name).exists()


def card_id(card: dict) -> str:
    return f"{card['task']}/{card['subtask']}@{card['org']}"


def card_slug(card: dict) -> str:
    """A file name unique per (id, backbone, config), readable for the common parts."""
    b, a = card["backbone"], card["architecture"]
    key = hashlib.sha1(f"{card_id(card)}|{b['model_name']}|{a['config_hash']}".encode()).hexdigest()[:8]
    return f"{card['task']}_{card['subtask']}_{b['model_type']}{b['hidden_size']}_{a['name']}_{key}"
