"""Adapter configurations: one frozen dataclass, presets by name, and the string form.

Field names and defaults follow AdapterHub's ``adapters`` 1.x ``BnConfig`` so that its
``adapter_config.json`` files read as they are. One deliberate difference: our default
``init_weights`` is ``"identity"`` (a zero up-projection), so a freshly added adapter leaves
the model's outputs exactly unchanged; AdapterHub's ``bert``, ``houlsby`` and
``mam_adapter`` inits stay selectable.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .errors import AdapterConfigError

INITS = ("identity", "bert", "houlsby", "mam_adapter")
SCALINGS = ("learned", "channel")
RESIDUAL_BEFORE_LN = (True, False, "post_add")


@dataclass(frozen=True)
class BnConfig:
    """A bottleneck adapter: down-projection, non-linearity, up-projection, residual.

    ``mh_adapter`` places one after self-attention, ``output_adapter`` one after the
    feed-forward block; the ``*_ln_*`` and ``residual_*`` flags decide where the adapter sits
    relative to the layer's own residual connection and LayerNorm (see ``methods/bottleneck``).
    """

    mh_adapter: bool
    output_adapter: bool
    reduction_factor: Union[float, Mapping]
    non_linearity: str
    original_ln_before: bool = False
    original_ln_after: bool = True
    ln_before: bool = False
    ln_after: bool = False
    init_weights: str = "identity"
    init_weights_seed: int | None = None
    is_parallel: bool = False
    scaling: Union[float, str] = 1.0
    use_gating: bool = False
    residual_before_ln: Union[bool, str] = True
    adapter_residual_before_ln: bool = False
    inv_adapter: str | None = None
    inv_adapter_reduction_factor: float | None = None
    cross_adapter: bool = False
    leave_out: tuple = ()
    dropout: float = 0.0
    # AdapterHub's PHM (Compacter) fields: read and written so files round-trip; only the
    # defaults (phm_layer=False) are supported.
    phm_layer: bool = False
    phm_dim: int = 4
    factorized_phm_W: bool | None = True
    shared_W_phm: bool | None = False
    shared_phm_rule: bool | None = True
    factorized_phm_rule: bool | None = False
    phm_c_init: str | None = "normal"
    phm_init_range: float | None = 0.0001
    learn_phm: bool | None = True
    hypercomplex_nonlinearity: str | None = "glorot-uniform"
    phm_rank: int | None = 1
    phm_bias: bool | None = True
    stochastic_depth: float | None = 0.0

    def __post_init__(self):
        object.__setattr__(self, "leave_out", tuple(int(i) for i in self.leave_out))
        if isinstance(self.reduction_factor, Mapping):
            object.__setattr__(self, "reduction_factor", {str(k): v for k, v in self.reduction_factor.items()})
        self._validate()

    def _validate(self):
        factors = (
            list(self.reduction_factor.values())
            if isinstance(self.reduction_factor, Mapping)
            else [self.reduction_factor]
        )
        for f in factors:
            if isinstance(f, bool) or not isinstance(f, (int, float)) or f <= 0:
                raise AdapterConfigError(
                    f"reduction_factor must be a number > 0 (or a mapping of layer -> number > 0), got {f!r}; "
                    "use e.g. reduction_factor=16"
                )
        if not (self.mh_adapter or self.output_adapter):
            raise AdapterConfigError("an adapter needs mh_adapter=True or output_adapter=True to be placed anywhere")
        if self.init_weights not in INITS:
            raise AdapterConfigError(f"unknown init_weights {self.init_weights!r}; choose one of {', '.join(INITS)}")
        if isinstance(self.scaling, str) and self.scaling not in SCALINGS:
            raise AdapterConfigError(
                f"unknown scaling {self.scaling!r}; use a number or one of {', '.join(SCALINGS)}"
            )
        if self.residual_before_ln not in RESIDUAL_BEFORE_LN:
            raise AdapterConfigError(f"residual_before_ln must be true, false or 'post_add', got {self.residual_before_ln!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, supported in (("phm_layer", False), ("use_gating", False), ("cross_adapter", False)):
            if getattr(self, name) != supported:
                raise AdapterConfigError(f"{name}={getattr(self, name)!r} is not supported by adapterctl yet")
        if self.stochastic_depth:
            raise AdapterConfigError("stochastic_depth is not supported by adapterctl yet")
        if self.inv_adapter not in (None, "nice", "glow"):
            raise AdapterConfigError(f"unknown inv_adapter {self.inv_adapter!r}; use 'nice' or 'glow'")
        _activation_check(self.non_linearity)

    def reduction_factor_for(self, layer: int) -> float:
        rf = self.reduction_factor
        if not isinstance(rf, Mapping):
            return rf
        if str(layer) in rf:
            return rf[str(layer)]
        if "default" in rf:
            return rf["default"]
        raise AdapterConfigError(
            f"reduction_factor mapping {rf} has no entry for layer {layer} and no 'default'; "
            "add one, e.g. {'default': 16}"
        )

    def bottleneck_size(self, hidden_size: int, layer: int) -> int:
        """AdapterHub's rule: ``int(hidden // reduction_factor)``, at least 1."""
        return max(1, int(hidden_size // self.reduction_factor_for(layer)))

    def replace(self, **changes) -> "BnConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise AdapterConfigError(
                f"unknown adapter config field(s) {', '.join(sorted(unknown))}; valid fields: {', '.join(field_names())}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["leave_out"] = list(self.leave_out)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "BnConfig":
        d = dict(d)
        arch = d.pop("architecture", None)
        if arch not in (None, "bottleneck"):
            raise AdapterConfigError(
                f"adapter architecture {arch!r} is not supported; adapterctl supports bottleneck adapters "
                f"({', '.join(sorted(PRESETS))})"
            )
        legacy_inv = d.pop("invertible_adapter", None)  # adapter-transformers v1 nested form
        if legacy_inv:
            d["inv_adapter"] = legacy_inv.get("block_type")
            d["inv_adapter_reduction_factor"] = legacy_inv.get("reduction_factor")
        known = set(field_names())
        unknown = sorted(set(d) - known)
        if unknown:
            raise AdapterConfigError(
                f"unknown adapter config field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(known))}"
            )
        missing = [k for k in ("mh_adapter", "output_adapter", "reduction_factor", "non_linearity") if k not in d]
        if missing:
            raise AdapterConfigError(
                f"adapter config dict lacks {', '.join(missing)}; give a full config or start from a preset "
                f"({', '.join(sorted(PRESETS))})"
            )
        return cls(**d)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(BnConfig)]


def _activation_check(name: str) -> None:
    from transformers.activations import ACT2FN

    if name.lower() not in ACT2FN and name.lower() != "leakyrelu":
        raise AdapterConfigError(
            f"unknown non_linearity {name!r}; use one of relu, gelu, swish, tanh, leakyrelu, ... "
            "(any name in transformers' ACT2FN)"
        )


_SEQ_BN = dict(
    original_ln_before=True, original_ln_after=True, residual_before_ln=True, adapter_residual_before_ln=False,
    ln_before=False, ln_after=False, mh_adapter=False, output_adapter=True, non_linearity="relu", reduction_factor=16,
)
_DOUBLE_SEQ_BN = dict(
    original_ln_before=False, original_ln_after=True, residual_before_ln=True, adapter_residual_before_ln=False,
    ln_before=False, ln_after=False, mh_adapter=True, output_adapter=True, non_linearity="swish", reduction_factor=16,
)
_PAR_BN = dict(
    original_ln_before=False, original_ln_after=True, ln_before=False, ln_after=False, mh_adapter=False,
    output_adapter=True, non_linearity="relu", reduction_factor=2, init_weights="mam_adapter", is_parallel=True,
    scaling=4.0,
)
_INV = dict(inv_adapter="nice", inv_adapter_reduction_factor=2)

PRESETS: dict[str, dict] = {
    "pfeiffer": _SEQ_BN,
    "seq_bn": _SEQ_BN,
    "houlsby": _DOUBLE_SEQ_BN,
    "double_seq_bn": _DOUBLE_SEQ_BN,
    "parallel": _PAR_BN,
    "par_bn": _PAR_BN,
    "scaled_parallel": {**_PAR_BN, "scaling": "learned"},
    "scaled_par_bn": {**_PAR_BN, "scaling": "learned"},
    "pfeiffer+inv": {**_SEQ_BN, **_INV},
    "seq_bn_inv": {**_SEQ_BN, **_INV},
    "houlsby+inv": {**_DOUBLE_SEQ_BN, **_INV},
    "double_seq_bn_inv": {**_DOUBLE_SEQ_BN, **_INV},
}

_STRING_FORM = re.compile(r"^(?P<name>[^\[\]|\n]+?)\s*(?:\[(?P<kvs>.*)\])?$")


def parse_config_string(text: str) -> BnConfig:
    """``pfeiffer[reduction_factor=8, non_linearity='gelu']`` -> a config.

    Values are Python literals, parsed with ``ast.literal_eval`` (never ``eval``).
    """
    if "|" in text:
        raise AdapterConfigError(
            f"config unions ({text!r}) are not supported: adapterctl adds one bottleneck config per adapter"
        )
    m = _STRING_FORM.match(text.strip())
    if not m:
        raise AdapterConfigError(
            f"malformed adapter config string {text!r}; expected NAME or NAME[key=value, ...], "
            "e.g. pfeiffer[reduction_factor=8, non_linearity='gelu']"
        )
    name = m.group("name").strip()
    if name not in PRESETS:
        raise AdapterConfigError(f"unknown adapter config {name!r}; choose one of {', '.join(sorted(PRESETS))}")
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
    return BnConfig(**PRESETS[name]).replace(**kwargs)


def load_config(spec: Any, **overrides) -> BnConfig:
    """Resolve anything a user may call a config: a ``BnConfig``, a preset name, the string
    form, a dict (full config, or ``{"preset": name, **overrides}``), or the path of an
    ``adapter_config.json`` (AdapterHub's envelope with a ``config`` key, or a bare dict)."""
    if isinstance(spec, BnConfig):
        config = spec
    elif isinstance(spec, Mapping):
        spec = dict(spec)
        preset = spec.pop("preset", None)
        config = load_config(preset).replace(**spec) if preset else BnConfig.from_dict(spec)
    elif isinstance(spec, Path) or (isinstance(spec, str) and (spec.endswith(".json") or Path(spec).is_dir())):
        path = Path(spec)
        if path.is_dir():
            path = path / "adapter_config.json"
        if not path.is_file():
            raise AdapterConfigError(f"adapter config file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise AdapterConfigError(f"{path} is not valid JSON ({e}); restore the file or re-save the adapter") from None
        config = load_config(data.get("config", data) if isinstance(data, Mapping) else data)
    elif isinstance(spec, str):
        config = parse_config_string(spec)
    else:
        raise AdapterConfigError(
            f"cannot read an adapter config from {type(spec).__name__}; give a preset name, a config string, "
            "a dict, a BnConfig or the path of an adapter_config.json"
        )
    return config.replace(**overrides) if overrides else config


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


def config_hash(config: BnConfig | Mapping, length: int = 16) -> str:
    """AdapterHub's index key for a config: SHA-1 over the minimized, key-sorted JSON.

    Our ``identity`` init counts as AdapterHub's default ``bert``: the init is not part of the
    architecture, and the same adapter must find the same index entry.
    """
    d = config.to_dict() if isinstance(config, BnConfig) else dict(config)
    if d.get("init_weights") == "identity":
        d["init_weights"] = "bert"
    minimized = _minimize(d)
    for name, default in _HASH_IGNORE_DEFAULT.items():
        if minimized.get(name, None) == default:
            del minimized[name]
    return hashlib.sha1(json.dumps(minimized, sort_keys=True).encode("utf-8")).hexdigest()[:length]
