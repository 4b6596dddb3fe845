"""``adapter_summary``: name, method, parameters, share of the backbone, active and trainable, for
every adapter, fusion and head of a model."""

from __future__ import annotations

from .composition import head_names
from .config import architecture_name


def summary_rows(model) -> tuple[list[dict], int]:
    """One row per adapter, fusion and head; and the backbone's own parameter count."""
    setup = model.active_setup
    active = set(setup.flatten()) if setup is not None else set()
    params = {name: [p for m in model.adapter_modules(name) for p in m.parameters()] for name in model.adapters_config}
    fusions = {name: [p for m in model.fusion_modules(name) for p in m.parameters()] for name in model.fusions_config}
    own = {id(p) for ps in (*params.values(), *fusions.values()) for p in ps}
    backbone = sum(p.numel() for p in model.backbone.parameters() if id(p) not in own)
    heads = head_names(model.active_head)
    rows = [_row(name, architecture_name(model.adapters_config[name]), params[name], backbone, name in active)
            for name in model.adapters_config]
    rows += [_row(name, "fusion", fusions[name], backbone, name in model.active_fusions()) for name in fusions]
    rows += [_row(f"head:{name}", head.config["head_type"], list(head.parameters()), backbone, name in heads)
             for name, head in model.heads.items()]
    return rows, backbone


def _row(name, method, params, backbone_params, active) -> dict:
    n = sum(p.numel() for p in params)
    return {"name": name, "method": method, "params": n, "percent": 100.0 * n / backbone_params,
            "active": bool(active), "trainable": bool(params) and all(p.requires_grad for p in params)}


def format_summary(rows: list[dict], model_type: str, backbone_params: int) -> str:
    header = f"{'name':<24}{'method':<18}{'params':>12}{'% backbone':>12}{'active':>8}{'train':>7}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['name']:<24}{r['method']:<18}{r['params']:>12,}{r['percent']:>11.3f}%"
                     f"{'yes' if r['active'] else 'no':>8}{'yes' if r['trainable'] else 'no':>7}")
    lines.append(f"{'backbone':<24}{model_type:<18}{backbone_params:>12,}{100:>11.3f}%")
    return "\n".join(lines)
