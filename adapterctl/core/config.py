"""Adapter configs of every method: the base class, presets by name, the string form, loading
from anything a user may call a config, and AdapterHub's config hash.

Each method defines its config as a frozen dataclass derived from ``AdapterConfig`` with
AdapterHub's field names and defaults (``methods/<method>/config.py``) and registers it with
the method (``core/registry.py``). A config dict finds its class by AdapterHub's
``architecture`` key, so saved ``adapter_config.json`` files of any method load here without
special cases. Nothing here imports torch: the CLI reads configs without it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from ..errors import AdapterConfigError
from . import registry


@dataclass(frozen=True)
class AdapterConfig:
    """Base of every method's config: the dict round trip, ``replace`` and their errors.

    ``architecture`` and ``method`` are set when the method registers its config class.
    """

    architecture: ClassVar[str | None] = None
    method: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()  # fields a full config dict must name (no default)

    def __init_subclass__(cls, **kwargs):
        """A method's own ``__post_init__`` runs after ``check_fields``, so its checks and
        normalizations (``int(i) for i in leave_out``) only ever see values of the declared types."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None:
            @functools.wraps(own)
            def checked(self):
                self.check_fields()
                own(self)

            cls.__post_init__ = checked

    def __post_init__(self):
        self.check_fields()

    def check_fields(self) -> None:
        """Every field holds what its annotation says (JSON's types: a bool is not a number) and
        no number is NaN or infinite, else a one-line error naming the field and the fix."""
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value, element = getattr(self, f.name), LIST_ELEMENTS.get(f.name)
            example = f", e.g. {f.name}={_plain(f.default)!r}" if f.default is not dataclasses.MISSING else ""
            if not _finite(value):
                raise AdapterConfigError(f"{self.method} config: {f.name}={value!r} is not a finite number; "
                                         f"give a finite value{example}")
            if not _accepts(value, hints[f.name], element):
                raise AdapterConfigError(f"{self.method} config: {f.name}={value!r} must be "
                                         f"{_describe(hints[f.name], element)}{example}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def _set(self, name: str, value) -> None:
        """Normalize a field in ``__post_init__`` (the dataclass is frozen)."""
        object.__setattr__(self, name, value)

    def replace(self, **changes) -> "AdapterConfig":
        unknown = set(changes) - set(self.field_names())
        if unknown:
            raise AdapterConfigError(
                f"unknown adapter config field(s) {', '.join(sorted(unknown))} for {self.method}; "
                f"valid fields: {', '.join(self.field_names())}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """AdapterHub's dict: lists for sequences; ``architecture`` when the method has one."""
        d = {name: _plain(getattr(self, name)) for name in self.field_names()}
        if self.architecture is not None:
            d["architecture"] = self.architecture
        return d

    def to_file_dict(self) -> dict:
        """The dict written to ``adapter_config.json``, readable by AdapterHub's library."""
        return self.to_dict()

    @classmethod
    def from_dict(cls, d: Mapping) -> "AdapterConfig":
        d = {k: v for k, v in d.items() if k != "architecture"}
        known = set(cls.field_names())
        unknown = sorted(set(d) - known)
        if unknown:
            raise AdapterConfigError(
                f"unknown adapter config field(s) {', '.join(unknown)} for {cls.method}; "
                f"valid fields: {', '.join(sorted(known))}"
            )
        missing = [k for k in cls.required if k not in d]
        if missing:
            raise AdapterConfigError(
                f"{cls.method} adapter config dict lacks {', '.join(missing)}; give a full config or start from a preset "
                f"({', '.join(presets_of(cls))})"
            )
        return cls(**d)

    def placement_name(self) -> str:
        """A readable name for where and how the method acts (hub cards, summaries), used when
        the config equals no preset."""
        return self.method


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


# -- field types ------------------------------------------------------------------------------

# The elements of AdapterHub's list fields (the dataclasses annotate them as plain tuples).
LIST_ELEMENTS = {"leave_out": int, "attn_matrices": str}


@functools.cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _finite(value) -> bool:
    """No NaN or infinity in a number, a list or a mapping's values (one level: fields hold no deeper data)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(not isinstance(v, float) or math.isfinite(v) for v in value)
    if isinstance(value, Mapping):
        return all(not isinstance(v, float) or math.isfinite(v) for v in value.values())
    return True


def _accepts(value, tp, element=None) -> bool:
    if tp is Any:
        return True  # a field the method types loosely (a union's parts): its own checks decide
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_accepts(value, arm, element) for arm in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp in (tuple, list):
        return isinstance(value, (list, tuple)) and (element is None or all(_accepts(v, element) for v in value))
    if tp is Mapping:  # reduction_factor per layer: names -> numbers, nothing nested (no cycle)
        return isinstance(value, Mapping) and all(isinstance(k, (str, int)) and _accepts(v, float)
                                                  for k, v in value.items())
    return True  # a type this check does not know: the method's own __post_init__ decides


def _describe(tp, element=None) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arm, element) for arm in typing.get_args(tp))
    if tp in (tuple, list):
        return f"a list of {({int: 'integers', str: 'names'})[element]}" if element else "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null",
             Mapping: "a mapping of layer -> number"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


# -- presets --------------------------------------------------------------------------------


class Preset(NamedTuple):
    config_class: type
    fields: dict


PRESETS: dict[str, Preset] = {}  # filled by each method's config module, in registration order


def register_preset(name: str, config_class: type, **fields) -> None:
    PRESETS[name] = Preset(config_class, fields)


def preset(name: str) -> AdapterConfig:
    """The config a preset name stands for."""
    registry.load_builtin_methods()
    if name not in PRESETS:
        raise AdapterConfigError(f"unknown adapter config {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    cls, fields = PRESETS[name]
    return cls(**fields)


def presets_of(config_class: type) -> list[str]:
    return [name for name, p in PRESETS.items() if p.config_class is config_class]


# -- the string form and loading ------------------------------------------------------------

_STRING_FORM = re.compile(r"^(?P<name>[^\[\]|\n]+?)\s*(?:\[(?P<kvs>.*)\])?$")


def parse_config_string(text: str) -> AdapterConfig:
    """``pfeiffer[reduction_factor=8, non_linearity='gelu']`` -> a config; ``seq_bn|lora`` -> a
    union of configs (``methods/union``).

    Values are Python literals, parsed with ``ast.literal_eval`` (never ``eval``).
    """
    if "|" in text:
        return registry.config_class_for("union")(*text.split("|"))
    m = _STRING_FORM.match(text.strip())
    if not m:
        raise AdapterConfigError(
            f"malformed adapter config string {text!r}; expected NAME or NAME[key=value, ...], "
            "e.g. pfeiffer[reduction_factor=8, non_linearity='gelu']"
        )
    kwargs: dict[str, Any] = {}
    if m.group("kvs") and m.group("kvs").strip():
        try:
            call = ast.parse(f"f({m.group('kvs')})", mode="eval").body
            if call.args:
                raise ValueError("positional values")
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        except (SyntaxError, ValueError) as e:
            raise AdapterConfigError(
                f"malformed adapter config string {text!r} ({e}); write values as key=value pairs of "
                "Python literals, e.g. pfeiffer[reduction_factor=8, non_linearity='gelu']"
            ) from None
    return preset(m.group("name").strip()).replace(**kwargs)


def config_from_dict(d: Mapping) -> AdapterConfig:
    """A full config dict, its class found by AdapterHub's ``architecture`` key."""
    return registry.config_class_for(d.get("architecture")).from_dict(d)


def load_config(spec: Any, **overrides) -> AdapterConfig:
    """Resolve anything a user may call a config: a config object, a preset name, the string
    form, a dict (a full config, or ``{"preset": name, **overrides}``), or the path of an
    ``adapter_config.json`` (AdapterHub's envelope with a ``config`` key, or a bare dict)."""
    config = _load(spec, ())
    return config.replace(**overrides) if overrides else config


_MAX_REFERENCES = 8  # a preset or a file may name another one, and that one another, this deep


def _load(spec: Any, trail: tuple) -> AdapterConfig:
    """``load_config`` without overrides; ``trail``: the dicts and files that led here, so a
    config that refers back to itself is an error, not endless recursion."""
    is_file = isinstance(spec, Path) or (isinstance(spec, str) and (spec.endswith(".json") or Path(spec).is_dir()))
    if is_file:
        spec = Path(spec) / "adapter_config.json" if Path(spec).is_dir() else Path(spec)
    key = spec.resolve() if is_file else id(spec)
    if key in trail or len(trail) > _MAX_REFERENCES:
        chain = " -> ".join(str(k) for k in (*trail, key) if isinstance(k, Path)) or "a dict that contains itself"
        raise AdapterConfigError(f"the adapter config refers back to itself ({chain}); write out the config's fields "
                                 "instead of a reference")
    if isinstance(spec, AdapterConfig):
        config = spec
    elif isinstance(spec, Mapping):
        spec = dict(spec)
        name = spec.pop("preset", None)
        config = _load(name, (*trail, key)).replace(**spec) if name else config_from_dict(spec)
    elif is_file:
        if not spec.is_file():
            raise AdapterConfigError(f"adapter config file {spec} does not exist")
        try:
            data = json.loads(spec.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            problem = "nested too deep" if isinstance(e, RecursionError) else e
            raise AdapterConfigError(f"{spec} is not valid JSON ({problem}); restore the file or re-save the adapter") \
                from None
        config = _load(data.get("config", data) if isinstance(data, Mapping) else data, (*trail, key))
    elif isinstance(spec, str):
        config = parse_config_string(spec)
    else:
        raise AdapterConfigError(
            f"cannot read an adapter config from {type(spec).__name__}; give a preset name, a config string, "
            "a dict, a config object or the path of an adapter_config.json"
        )
    return config


# -- AdapterHub's index key -------------------------------------------------------------------

# AdapterHub drops these when they hold their defaults, to keep hashes stable across its versions.
_HASH_IGNORE_DEFAULT = {
    "phm_layer": True, "phm_dim": 4, "factorized_phm_W": True, "shared_W_phm": False, "shared_phm_rule": True,
    "factorized_phm_rule": False, "phm_c_init": "normal", "phm_init_range": 0.0001, "learn_phm": True,
    "hypercomplex_nonlinearity": "glorot-uniform", "phm_rank": 1, "phm_bias": True, "init_weights": "bert",
    "scaling": 1.0,
}


def _minimize(d):
    if isinstance(d, Mapping):
        return {k: _minimize(v) for k, v in d.items() if v}
    return d


def config_hash(config: AdapterConfig | Mapping, length: int = 16) -> str:
    """AdapterHub's index key for a config: SHA-1 over the minimized, key-sorted JSON.

    Our ``identity`` init counts as AdapterHub's default ``bert``: the init is not part of the
    architecture, and the same adapter must find the same index entry.
    """
    d = config.to_file_dict() if isinstance(config, AdapterConfig) else dict(config)  # a union's parts' too
    if d.get("init_weights") == "identity":
        d["init_weights"] = "bert"
    minimized = _minimize(d)
    for name, default in _HASH_IGNORE_DEFAULT.items():
        if minimized.get(name, None) == default:
            del minimized[name]
    return hashlib.sha1(json.dumps(minimized, sort_keys=True).encode("utf-8")).hexdigest()[:length]


def architecture_name(config: AdapterConfig) -> str:
    """The preset a config equals (by AdapterHub's hash), else its method's placement name
    (``pfeiffer[reduction_factor=8]`` is a ``pfeiffer``): what hub cards and summaries show."""
    registry.load_builtin_methods()
    digest = config_hash(config)
    for name, p in PRESETS.items():
        if p.config_class is type(config) and config_hash(p.config_class(**p.fields)) == digest:
            return name
    return config.placement_name()
