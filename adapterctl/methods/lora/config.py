"""LoRA's config (AdapterHub's ``LoRAConfig``, ``architecture: "lora"``) and its presets ``lora``,
``ia3``, ``dora``, ``vera`` and ``dvora``: (IA)^3 is AdapterHub's LoRA config with
``composition_mode="scale"``, a learned vector that scales a projection's output instead of a
low-rank update added to it; DoRA (``use_dora``) adds a learned magnitude per output row; VeRA
(``vera_d``, ``vera_b`` set) shares frozen random A and B and trains scaling matrices. All are
one method because AdapterHub saves them all as ``architecture: "lora"``, which the registry
maps to one config class."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig, register_preset
from ...errors import AdapterConfigError

COMPOSITION_MODES = ("add", "scale")
INITS = ("lora", "bert", "ia3", "vera")
DTYPES = (None, "float32", "float16", "bfloat16", "float64")


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
    """

    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    leave_out: tuple = ()
    r: int = 8
    alpha: int = 8
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

    @property
    def is_vera(self) -> bool:
        return self.vera_d is not None

    def placement_name(self) -> str:
        if self.composition_mode == "scale":
            return "ia3"
        return ("dvora" if self.use_dora else "vera") if self.is_vera else "dora" if self.use_dora else "lora"


register_preset("lora", LoRAConfig)
register_preset("ia3", LoRAConfig, intermediate_lora=True, r=1, alpha=1, attn_matrices=("k", "v"),
                composition_mode="scale", init_weights="ia3")
register_preset("dora", LoRAConfig, use_dora=True)
register_preset("vera", LoRAConfig, r=8, vera_d=0.1, vera_b=0.0, init_weights="vera")
register_preset("dvora", LoRAConfig, vera_d=0.1, vera_b=0.0, init_weights="vera", use_dora=True)
