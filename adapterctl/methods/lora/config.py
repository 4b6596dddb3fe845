"""LoRA's config (AdapterHub's ``LoRAConfig``, ``architecture: "lora"``) and its presets ``lora``
and ``ia3``: (IA)^3 is AdapterHub's LoRA config with ``composition_mode="scale"``, a learned
vector that scales a projection's output instead of a low-rank update added to it."""

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
    the output by ``alpha * b``. A fresh adapter (``init_weights`` ``lora``: B = 0; ``ia3``:
    b = 1) leaves outputs unchanged.
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
        for name in ("use_dora", "vera_d", "vera_b"):
            if getattr(self, name) not in (None, False):
                raise AdapterConfigError(f"{name}={getattr(self, name)!r} is not supported by adapterctl yet")

    def placement_name(self) -> str:
        return "ia3" if self.composition_mode == "scale" else "lora"


register_preset("lora", LoRAConfig)
register_preset("ia3", LoRAConfig, intermediate_lora=True, r=1, alpha=1, attn_matrices=("k", "v"),
                composition_mode="scale", init_weights="ia3")
