"""LoRA's config (AdapterHub's ``LoRAConfig``, ``architecture: "lora"``) and its presets ``lora``,
``ia3``, ``dora``, ``vera`` and ``dvora``: (IA)^3 is AdapterHub's LoRA config with
``composition_mode="scale"``, a learned vector that scales a projection's output instead of a
low-rank update added to it; DoRA (``use_dora``) adds a learned magnitude per output row; VeRA
(``vera_d``, ``vera_b`` set) shares frozen random A and B and trains scaling matrices. All are
one method because AdapterHub saves them all as ``architecture: "lora"``, which the registry
maps to one config class.

Five fields beyond AdapterHub's carry what PEFT's ``LoraConfig`` / ``IA3Config`` can say and
AdapterHub's cannot, with PEFT's names and matching rules, on module paths relative to the
backbone (``encoder.layer.1.attention.self.query``): ``target_modules`` (any Linear of the
backbone, e.g. Llama's ``mlp.gate_proj``, BERT's ``pooler.dense``, differing per layer as it
may), ``rank_pattern`` / ``alpha_pattern`` (a rank or alpha per module), ``feedforward_modules``
(IA3 scales these projections' input, not their output) and ``dora_variant="peft"`` (PEFT's
DoRA). At their defaults they are left out of saved files, so AdapterHub's files and config
hashes stay as they are."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...core.config import AdapterConfig, register_preset
from ...errors import AdapterConfigError

COMPOSITION_MODES = ("add", "scale")
INITS = ("lora", "bert", "ia3", "vera")
DTYPES = (None, "float32", "float16", "bfloat16", "float64")
DORA_VARIANTS = ("adapterhub", "peft")
# adapterctl's fields beyond AdapterHub's and their defaults, left out of saved files at those
PEFT_FIELDS = {"target_modules": (), "rank_pattern": {}, "alpha_pattern": {}, "feedforward_modules": (),
               "dora_variant": "adapterhub"}


@dataclass(frozen=True)
class LoRAConfig(AdapterConfig):
    """Low-rank updates of a layer's projections (Hu et al. 2021).

    ``selfattn_lora`` adapts the attention projections named in ``attn_matrices`` (``q``, ``k``,
    ``v``, and ``o`` where the family names one), ``intermediate_lora`` and ``output_lora`` the
    MLP projections AdapterHub calls so (the family spec says which module each is).
    ``composition_mode="add"`` adds ``alpha / r * B A x``; ``"scale"`` (IA3, ``r=1``) multiplies
    the output by ``alpha * b``. ``use_dora``: DoRA's magnitude. ``vera_d``/``vera_b``: VeRA
    (``vera.py``). A fresh adapter (``init_weights`` ``lora``: B = 0; ``ia3``: b = 1; VeRA with
    ``vera_b=0``; DoRA's magnitude at the weight's norms) leaves outputs unchanged.

    ``target_modules``: when given, it alone places the adapter (``selfattn_lora``,
    ``attn_matrices``, ``intermediate_lora`` and ``output_lora`` are then unused): on every Linear
    (or Conv1D) of the backbone (adapters' own aside) whose path is a name of the list or ends
    with ``.`` + one (PEFT's list rule); a fused projection it names is adapted whole.
    ``rank_pattern`` / ``alpha_pattern``: ``{pattern: r}`` / ``{pattern: alpha}`` overriding ``r`` /
    ``alpha`` where the regex ``pattern`` matches the end of a module's path at a dot (PEFT's
    ``get_pattern_key``; the first matching key wins). ``feedforward_modules``: with
    ``composition_mode="scale"``, the modules whose path ends with one of these names get their
    input scaled (PEFT's IA3 rule). ``dora_variant``: ``adapterhub`` (``m / ||W + B A|| * (W x +
    b + s B A x)``) or ``peft`` (``m / ||W + s B A|| * (W x + s B A x) + b``, the norm detached).
    """

    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    leave_out: tuple = ()
    r: int = 8
    alpha: int | float = 8  # AdapterHub types it int; PEFT folders (use_rslora, AdaLoRA) need any number
    dropout: float = 0.0
    attn_matrices: tuple = ("q", "v")
    composition_mode: str = "add"
    init_weights: str = "lora"
    init_weights_seed: int | None = None
    use_gating: bool = False
    use_dora: bool = False
    vera_d: float | None = None
    vera_b: float | None = None
    dtype: str | None = None
    target_modules: tuple = ()
    rank_pattern: dict | None = field(default_factory=dict)  # None: {} (the CLI's files say null, so that
    alpha_pattern: dict | None = field(default_factory=dict)  # adapter.rank_pattern={...} replaces it)
    feedforward_modules: tuple = ()
    dora_variant: str = "adapterhub"

    def __post_init__(self):
        self._set("leave_out", tuple(int(i) for i in self.leave_out))
        if isinstance(self.attn_matrices, str):
            raise AdapterConfigError(f"attn_matrices must be a list such as ['q', 'v'], got {self.attn_matrices!r}")
        self._set("attn_matrices", tuple(self.attn_matrices))
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise AdapterConfigError(f"r must be an integer >= 1, got {self.r!r}; use e.g. r=8")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise AdapterConfigError(f"alpha must be a number, got {self.alpha!r}; use e.g. alpha=8")
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.composition_mode not in COMPOSITION_MODES:
            raise AdapterConfigError(
                f"unknown composition_mode {self.composition_mode!r}; use 'add' (LoRA) or 'scale' (IA3)"
            )
        if self.composition_mode == "scale" and (self.r != 1 or self.dropout):
            raise AdapterConfigError("composition_mode='scale' (IA3) needs r=1 and dropout=0.0")
        if self.init_weights not in INITS:
            raise AdapterConfigError(f"unknown init_weights {self.init_weights!r}; choose one of {', '.join(INITS)}")
        if not (self.selfattn_lora or self.intermediate_lora or self.output_lora):
            raise AdapterConfigError(
                "a LoRA adapter needs selfattn_lora, intermediate_lora or output_lora to be placed anywhere"
            )
        if self.dtype not in DTYPES:
            raise AdapterConfigError(f"unknown dtype {self.dtype!r}; use one of {', '.join(map(str, DTYPES[1:]))}")
        if not isinstance(self.use_dora, bool):
            raise AdapterConfigError(f"use_dora must be true or false, got {self.use_dora!r}")
        if (self.vera_d is None) != (self.vera_b is None):
            raise AdapterConfigError(f"VeRA needs both vera_d and vera_b (e.g. vera_d=0.1, vera_b=0.0), got "
                                     f"vera_d={self.vera_d!r}, vera_b={self.vera_b!r}")
        for name in ("vera_d", "vera_b"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise AdapterConfigError(f"{name} must be a number, got {value!r}")
        if self.composition_mode == "scale" and (self.use_dora or self.is_vera):
            raise AdapterConfigError("DoRA and VeRA add an update (composition_mode='add'); IA3 (scale) takes neither")
        self._check_patterns()

    def _check_patterns(self):
        for name, number in (("rank_pattern", int), ("alpha_pattern", (int, float))):
            if getattr(self, name) is None:
                self._set(name, {})
            for key, value in getattr(self, name).items():
                if isinstance(value, bool) or not isinstance(value, number) or value <= 0 or not isinstance(key, str):
                    raise AdapterConfigError(f"{name} maps module-path patterns to positive numbers, got {key!r}: "
                                             f"{value!r}; use e.g. {name}={{'value': 4}}")
                try:
                    re.compile(key)
                except re.error as e:
                    raise AdapterConfigError(f"{name} key {key!r} is not a regular expression ({e}); "
                                             "escape it") from None
        self._set("rank_pattern", dict(self.rank_pattern))
        self._set("alpha_pattern", dict(self.alpha_pattern))
        if self.rank_pattern and (self.is_vera or self.composition_mode == "scale"):
            raise AdapterConfigError("rank_pattern sets LoRA ranks; VeRA shares one rank and IA3 has none: drop it")
        for name in ("target_modules", "feedforward_modules"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(m, str) and m for m in value):
                raise AdapterConfigError(f"{name} must be a list of module names, got {value!r}; use e.g. "
                                         "['output.dense']")
            self._set(name, tuple(value))
        if self.target_modules and self.leave_out:
            raise AdapterConfigError("target_modules names the adapted modules layer by layer; drop leave_out "
                                     "(name only the layers' modules you want)")
        if self.feedforward_modules and (self.composition_mode != "scale" or self.use_gating):
            raise AdapterConfigError("feedforward_modules choose where an ungated IA3 (composition_mode='scale') "
                                     "scales the input; drop it for LoRA or gated IA3")
        if self.dora_variant not in DORA_VARIANTS:
            raise AdapterConfigError(f"unknown dora_variant {self.dora_variant!r}; use 'adapterhub' or 'peft'")

    def at(self, path: str) -> "LoRAConfig":
        """The config of the module at ``path`` (relative to the backbone): ``r`` and ``alpha`` as
        ``rank_pattern`` / ``alpha_pattern`` say there."""
        changes = {name: patterns[key] for name, patterns in (("r", self.rank_pattern), ("alpha", self.alpha_pattern))
                   if (key := pattern_key(patterns, path)) is not None}
        return self.replace(**changes) if changes else self

    def targets(self, path: str) -> bool:
        """``target_modules`` names the module at ``path`` (PEFT's list rule)."""
        return any(path == name or path.endswith("." + name) for name in self.target_modules)

    def scales_input(self, path: str) -> bool:
        """IA3 at ``path`` scales the projection's input (PEFT's ``feedforward_modules``: a suffix)."""
        return any(path.endswith(name) for name in self.feedforward_modules)

    def to_file_dict(self) -> dict:
        d = self.to_dict()
        for name, default in PEFT_FIELDS.items():
            if d[name] == _plain_default(default):
                del d[name]
        return d

    @property
    def is_vera(self) -> bool:
        return self.vera_d is not None

    def placement_name(self) -> str:
        if self.composition_mode == "scale":
            return "ia3"
        return ("dvora" if self.use_dora else "vera") if self.is_vera else "dora" if self.use_dora else "lora"


def pattern_key(patterns: dict, path: str) -> str | None:
    """PEFT's ``get_pattern_key``: the first key whose regex matches the end of ``path`` at a dot."""
    return next((key for key in patterns if re.match(rf"(.*\.)?({key})$", path)), None)


def _plain_default(value):
    return list(value) if isinstance(value, tuple) else value


register_preset("lora", LoRAConfig)
register_preset("ia3", LoRAConfig, intermediate_lora=True, r=1, alpha=1, attn_matrices=("k", "v"),
                composition_mode="scale", init_weights="ia3")
register_preset("dora", LoRAConfig, use_dora=True)
register_preset("vera", LoRAConfig, r=8, vera_d=0.1, vera_b=0.0, init_weights="vera")
register_preset("dvora", LoRAConfig, vera_d=0.1, vera_b=0.0, init_weights="vera", use_dora=True)
