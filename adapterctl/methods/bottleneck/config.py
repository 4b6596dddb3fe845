"""The bottleneck adapter's config (AdapterHub's ``BnConfig``) and its presets.

Field names and defaults follow AdapterHub's ``adapters`` 1.x so that its
``adapter_config.json`` files read as they are. One deliberate difference: our default
``init_weights`` is ``"identity"`` (a zero up-projection), so a freshly added adapter leaves
the model's outputs exactly unchanged; AdapterHub's ``bert``, ``houlsby`` and
``mam_adapter`` inits stay selectable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Union

from ...core.config import AdapterConfig, register_preset
from ...errors import AdapterConfigError

MAX_WIDENING = 16  # the widest bottleneck accepted, in multiples of the hidden size

INITS = ("identity", "bert", "houlsby", "mam_adapter")
SCALINGS = ("learned", "channel")
RESIDUAL_BEFORE_LN = (True, False, "post_add")
PHM_W_INITS = ("glorot-uniform", "glorot-normal", "phm", "normal")


@dataclass(frozen=True)
class BnConfig(AdapterConfig):
    """A bottleneck adapter: down-projection, non-linearity, up-projection, residual.

    ``mh_adapter`` places one after self-attention, ``output_adapter`` one after the
    feed-forward block, ``cross_adapter`` one after an encoder-decoder's cross-attention; the
    ``*_ln_*`` and ``residual_*`` flags decide where the adapter sits
    relative to the layer's own residual connection and LayerNorm (see ``layer.py``).
    """

    required: ClassVar[tuple[str, ...]] = ("mh_adapter", "output_adapter", "reduction_factor", "non_linearity")

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
    # Compacter (``phm_layer``): PHM projections, see ``phm.py``
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
        self._set("leave_out", tuple(int(i) for i in self.leave_out))
        if isinstance(self.reduction_factor, Mapping):
            self._set("reduction_factor", {str(k): v for k, v in self.reduction_factor.items()})
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
        if not (self.mh_adapter or self.output_adapter or self.cross_adapter):
            raise AdapterConfigError("an adapter needs mh_adapter=True, output_adapter=True or cross_adapter=True to be "
                                     "placed anywhere")
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
        if isinstance(self.stochastic_depth, bool) or not 0.0 <= (self.stochastic_depth or 0.0) < 1.0:
            raise AdapterConfigError(f"stochastic_depth must be in [0, 1), got {self.stochastic_depth!r}")
        if self.phm_layer:
            self._validate_phm()
        if self.inv_adapter not in (None, "nice", "glow"):
            raise AdapterConfigError(f"unknown inv_adapter {self.inv_adapter!r}; use 'nice' or 'glow'")
        _activation_check(self.non_linearity)

    def _validate_phm(self) -> None:
        for name in ("phm_dim", "phm_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AdapterConfigError(f"{name} must be an integer >= 1, got {value!r}; e.g. {name}=4")
        if self.hypercomplex_nonlinearity not in PHM_W_INITS:
            raise AdapterConfigError(
                f"unknown hypercomplex_nonlinearity {self.hypercomplex_nonlinearity!r}; choose one of {', '.join(PHM_W_INITS)}"
            )
        if self.phm_c_init not in ("normal", "uniform"):
            raise AdapterConfigError(f"unknown phm_c_init {self.phm_c_init!r}; use 'normal' or 'uniform'")
        if self.init_weights not in ("identity", "bert"):
            raise AdapterConfigError(
                f"init_weights={self.init_weights!r} does not apply to PHM layers (phm_layer=True); "
                "use 'identity' (a zero up-projection) or 'bert' (AdapterHub's)"
            )
        if self.shared_W_phm and isinstance(self.reduction_factor, Mapping):
            raise AdapterConfigError(
                "shared_W_phm=True shares one W across layers, so it needs one reduction_factor, not a mapping"
            )

    def check_sizes(self, hidden_size: int, bottleneck_size: int) -> None:
        """Compacter splits both sides of a projection into ``phm_dim`` blocks."""
        if self.phm_layer and (hidden_size % self.phm_dim or bottleneck_size % self.phm_dim):
            raise AdapterConfigError(
                f"phm_layer needs the hidden size ({hidden_size}) and the bottleneck size ({bottleneck_size}) to be "
                f"multiples of phm_dim={self.phm_dim}; change reduction_factor or phm_dim"
            )

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
        """AdapterHub's rule: ``int(hidden // reduction_factor)``, at least 1. A size over
        ``MAX_WIDENING`` times the hidden size is refused before anything is allocated
        (``reduction_factor=1e-9`` would ask for terabytes)."""
        rf = self.reduction_factor_for(layer)
        size = max(1, int(hidden_size // rf))
        if size > MAX_WIDENING * hidden_size:
            raise AdapterConfigError(
                f"reduction_factor={rf} asks for a bottleneck of {size} units, over {MAX_WIDENING}x the hidden size "
                f"{hidden_size}; use reduction_factor >= 1/{MAX_WIDENING} (e.g. 16)")
        return size

    def to_file_dict(self) -> dict:
        # AdapterHub knows no "identity" init and would refuse the file; the init of saved
        # (trained) weights no longer matters, so we write its default.
        d = self.to_dict()
        if d["init_weights"] == "identity":
            d["init_weights"] = "bert"
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "BnConfig":
        d = dict(d)
        legacy_inv = d.pop("invertible_adapter", None)  # adapter-transformers v1 nested form
        if legacy_inv:
            d["inv_adapter"] = legacy_inv.get("block_type")
            d["inv_adapter_reduction_factor"] = legacy_inv.get("reduction_factor")
        return super().from_dict(d)

    def placement_name(self) -> str:
        if self.is_parallel:
            return "parallel"
        return "houlsby" if self.mh_adapter else "pfeiffer"


# transformers' ACT2FN names (5.x), plus leakyrelu: checked without importing torch, so configs
# (and hub cards, which hold them) load fast; core/activation.py builds the module by the name.
ACTIVATIONS = (
    "gelu", "gelu_10", "gelu_accurate", "gelu_fast", "gelu_new", "gelu_python", "gelu_python_tanh",
    "gelu_pytorch_tanh", "hardswish", "laplace", "leaky_relu", "leakyrelu", "linear", "mish", "prelu", "quick_gelu",
    "relu", "relu2", "relu6", "sigmoid", "silu", "sqrtsoftplus", "swish", "tanh", "xielu",
)


def _activation_check(name: str) -> None:
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
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
_PHM = dict(phm_layer=True, reduction_factor=32, non_linearity="gelu")

for _names, _fields in (
    (("pfeiffer", "seq_bn"), _SEQ_BN),
    (("houlsby", "double_seq_bn"), _DOUBLE_SEQ_BN),
    (("parallel", "par_bn"), _PAR_BN),
    (("scaled_parallel", "scaled_par_bn"), {**_PAR_BN, "scaling": "learned"}),
    (("pfeiffer+inv", "seq_bn_inv"), {**_SEQ_BN, **_INV}),
    (("houlsby+inv", "double_seq_bn_inv"), {**_DOUBLE_SEQ_BN, **_INV}),
    (("compacter",), {**_DOUBLE_SEQ_BN, **_PHM}),
    (("compacter++",), {**_SEQ_BN, **_PHM}),
    # AdapterHub's AdapterPlusConfig (Steitz & Roth 2024; not in its preset map): after the
    # feed-forward LayerNorm, without the model's LayerNorm after it; per-channel scaling.
    (("adapterplus",), dict(
        original_ln_before=True, original_ln_after=False, residual_before_ln=False, mh_adapter=False,
        output_adapter=True, non_linearity="gelu", reduction_factor=96, init_weights="houlsby", scaling="channel",
        stochastic_depth=0.1,
    )),
):
    for _name in _names:
        register_preset(_name, BnConfig, **_fields)
