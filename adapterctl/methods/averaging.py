"""``average_adapter``: a new adapter made of a weighted combination of existing adapters of one
config, AdapterHub's ``model.average_adapter`` (its arguments, defaults and strategies).

Weights default to ``1/n``; given ones are divided by their sum (``normalize_weights``). A dict
``{name: weight}`` names the adapters and their weights at once. Strategies:

- ``linear`` (every method): each tensor of the new adapter is ``sum_i w_i t_i`` (for LoRA its A
  and B each, not ``B A``), shared parameters (VeRA's frozen matrices) included.
- LoRA only (``composition_mode="add"``, no DoRA or VeRA): ``lora_linear_only_negate_b`` (Zhang
  et al. 2023: B takes ``w_i``, A ``|w_i|``, so a negative weight subtracts an adapter's update)
  and ``lora_delta_w_svd`` (the weighted sum of the updates, cut to ``svd_rank`` by an SVD; see
  ``methods/lora/model.py``).

The average is a new adapter with no head; its config is the inputs' (``r = svd_rank`` for the
SVD). The combination happens once, in the weights: unlike the ``Average`` composition block,
which runs every adapter on each input.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import AdapterConfigError

STRATEGIES = ("linear", "lora_linear_only_negate_b", "lora_delta_w_svd")
_IGNORED = ("dropout", "init_weights")  # may differ between the inputs (AdapterHub's rule)


def average_adapter(model, adapter_name: str, adapter_list, weights=None, combine_strategy: str = "linear",
                    normalize_weights: bool = True, overwrite_ok: bool = False, set_active: bool = False,
                    svd_rank: int | None = None) -> None:
    """Add ``adapter_name`` as the weighted average of ``adapter_list`` (a list of names, or a
    dict of names and weights) by ``combine_strategy`` (``linear``, ``lora_linear_only_negate_b``,
    ``lora_delta_w_svd`` with ``svd_rank``)."""
    if isinstance(adapter_list, Mapping):
        if weights is not None:
            raise AdapterConfigError("give the weights either in the adapter dict or as weights=, not both")
        adapter_list, weights = list(adapter_list), list(adapter_list.values())
    names = list(adapter_list)
    if not names:
        raise AdapterConfigError("average_adapter needs at least one adapter to average")
    if combine_strategy not in STRATEGIES:
        raise AdapterConfigError(f"unknown combine_strategy {combine_strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if (svd_rank is not None) != (combine_strategy == "lora_delta_w_svd"):
        raise AdapterConfigError("svd_rank goes with combine_strategy='lora_delta_w_svd' (and it needs one), "
                                 f"got svd_rank={svd_rank!r} with {combine_strategy!r}")
    for name in names:
        model._require_adapter(name)
    weights = _weights(names, weights, normalize_weights)
    config = _common_config(model, names)
    method = model._method_of(names[0])
    if combine_strategy not in method.combine_strategies:
        raise AdapterConfigError(f"{method.name} adapters cannot be averaged by {combine_strategy!r}; "
                                 f"use one of {', '.join(method.combine_strategies)}")
    if svd_rank is not None:
        config = config.replace(r=svd_rank)
    model.add_adapter(adapter_name, config, overwrite_ok=overwrite_ok)
    try:
        with torch.no_grad():
            if combine_strategy == "linear":
                _linear(model, adapter_name, names, weights)
            else:
                method.average(adapter_name, dict(zip(names, weights)), combine_strategy)
    except BaseException:
        model.delete_adapter(adapter_name)
        raise
    if set_active:
        model.set_active_adapters(adapter_name)


def _weights(names: list[str], weights, normalize: bool) -> list[float]:
    if weights is None:
        return [1.0 / len(names)] * len(names)
    weights = [float(w) for w in weights]
    if len(weights) != len(names):
        raise AdapterConfigError(f"{len(weights)} weights for {len(names)} adapters; give one weight per adapter")
    if normalize:
        total = sum(weights)
        if total == 0:
            raise AdapterConfigError(f"the weights {weights} sum to 0 and cannot be normalized; "
                                     "pass normalize_weights=False")
        weights = [w / total for w in weights]
    return weights


def _common_config(model, names: list[str]):
    """The inputs' config; they must agree but for dropout and init (AdapterHub's check)."""
    configs = [model.adapters_config[n] for n in names]

    def key(config):
        return type(config), {k: v for k, v in config.to_dict().items() if k not in _IGNORED}

    for name, config in zip(names[1:], configs[1:]):
        if key(config) != key(configs[0]):
            raise AdapterConfigError(
                f"cannot average {names[0]!r} and {name!r}: their configs differ; only adapters of the same config "
                "(but for dropout and init_weights) can be averaged"
            )
    return configs[0]


def _linear(model, adapter_name: str, names: list[str], weights: list[float]) -> None:
    """Every tensor of the new adapter = the weighted sum of the inputs' same tensor (the
    modules of adapters of one config come in the same order, with the same shapes)."""
    inputs = [model.adapter_modules(n) for n in names]
    for i, target in enumerate(model.adapter_modules(adapter_name)):
        averaged = {}
        for modules, w in zip(inputs, weights):
            for key, value in modules[i].state_dict().items():
                averaged[key] = averaged[key] + w * value if key in averaged else w * value
        target.load_state_dict(averaged)
