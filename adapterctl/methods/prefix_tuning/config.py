"""Prefix tuning's config (AdapterHub's ``PrefixTuningConfig``, ``architecture: "prefix_tuning"``)
and its presets ``prefix_tuning`` and ``prefix_tuning_flat``."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.config import AdapterConfig, register_preset
from ...errors import AdapterConfigError
from ..bottleneck.config import _activation_check


@dataclass(frozen=True)
class PrefixTuningConfig(AdapterConfig):
    """Learned keys and values prepended to every attention layer's own (Li & Liang 2021).

    ``prefix_length`` positions per layer; reparametrized through an MLP (``wte`` embeddings ->
    ``bottleneck_size`` -> ``non_linearity`` -> all layers' keys and values) unless ``flat``,
    which learns them directly. ``eject_prefix_tuning`` turns a trained MLP into its flat
    output. ``use_gating`` (UniPELT) scales each layer's prefix by a learned sigmoid gate, one
    for keys and values (``shared_gating``) or one each. On encoder-decoders (AdapterHub's
    switches) ``encoder_prefix`` puts a prefix in the encoder's self-attention and
    ``cross_prefix`` one in the decoder's cross-attention; the decoder's self-attention always
    has one, and encoders and decoders use the self-attention prefix whatever they say. Not an
    identity at init: a fresh prefix changes the outputs.
    """

    encoder_prefix: bool = True
    cross_prefix: bool = True
    leave_out: tuple = ()
    flat: bool = False
    prefix_length: int = 30
    bottleneck_size: int = 512
    non_linearity: str = "tanh"
    dropout: float = 0.0
    use_gating: bool = False
    shared_gating: bool = True
    init_weights_seed: int | None = None

    def __post_init__(self):
        self._set("leave_out", tuple(int(i) for i in self.leave_out))
        for name in ("prefix_length", "bottleneck_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AdapterConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        _activation_check(self.non_linearity)

    def placement_name(self) -> str:
        return "prefix_tuning_flat" if self.flat else "prefix_tuning"


register_preset("prefix_tuning", PrefixTuningConfig)
register_preset("prefix_tuning_flat", PrefixTuningConfig, flat=True)
