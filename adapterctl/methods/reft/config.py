"""ReFT's config (AdapterHub's ``ReftConfig``, ``architecture: "reft"``) and its presets
``loreft``, ``noreft`` and ``direft``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ...core.config import AdapterConfig, register_preset
from ...errors import AdapterConfigError
from ..bottleneck.config import _activation_check

DTYPES = (None, "float32", "float16", "bfloat16", "float64")


@dataclass(frozen=True)
class ReftConfig(AdapterConfig):
    """Representation fine-tuning (Wu et al. 2024): after each layer in ``layers`` (``"all"`` or
    indices), the hidden states of the first ``prefix_positions`` and the last
    ``suffix_positions`` real tokens (padding skipped) become
    ``x + (act(W x + b) - R x) R^T`` with a rank-``r`` ``R``: orthonormal rows
    (``orthogonality``, LoReFT), free (NoReFT), or without ``- R x`` (``subtract_projection=False``,
    DiReFT). Prefix and suffix positions have a unit each unless ``tied_weights``. Not an identity
    at init.

    ``subtract_projection`` is a field here; AdapterHub keeps it as a class attribute that its
    files lack, so its saved DiReFT reloads as NoReFT there (and here), while ours reload.
    """

    layers: Union[str, tuple] = "all"
    prefix_positions: int = 3
    suffix_positions: int = 0
    r: int = 1
    orthogonality: bool = True
    tied_weights: bool = False
    subtract_projection: bool = True
    dropout: float = 0.05
    non_linearity: str | None = None
    dtype: str | None = None
    output_reft: bool = True
    init_weights_seed: int | None = None

    def __post_init__(self):
        if self.layers != "all":
            if isinstance(self.layers, str):
                raise AdapterConfigError(f"layers must be 'all' or a list of layer indices, got {self.layers!r}")
            self._set("layers", tuple(int(i) for i in self.layers))
        for name in ("prefix_positions", "suffix_positions", "r"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "r" else 0):
                raise AdapterConfigError(f"{name} must be an integer >= {1 if name == 'r' else 0}, got {value!r}")
        if not (self.prefix_positions or self.suffix_positions):
            raise AdapterConfigError("a ReFT adapter needs prefix_positions or suffix_positions > 0 to act anywhere")
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.non_linearity is not None:
            _activation_check(self.non_linearity)
        if self.dtype not in DTYPES:
            raise AdapterConfigError(f"unknown dtype {self.dtype!r}; use one of {', '.join(map(str, DTYPES[1:]))}")
        if not self.output_reft:
            raise AdapterConfigError("output_reft=False places ReFT nowhere; AdapterHub has only the layer output")

    def placement_name(self) -> str:
        if self.orthogonality:
            return "loreft"
        return "noreft" if self.subtract_projection else "direft"


register_preset("loreft", ReftConfig)
register_preset("noreft", ReftConfig, orthogonality=False)
register_preset("direft", ReftConfig, orthogonality=False, subtract_projection=False)
