"""``adapterctl serve``: one backbone, the adapters named in ``adapters=``, served over HTTP
(conf/serve.yaml lists the keys; ``adapterctl serve --help`` prints them)."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from ..errors import AdapterConfigError


def engine_from(cfg: DictConfig):
    """The backbone with ``cfg.adapters`` loaded; a second adapter saved under a taken name
    becomes ``<name>_<index>`` unless a dict names it."""
    import torch

    from ..run.build import load_backbone, name_for
    from .engine import Engine

    specs = cfg.adapters or []
    named = isinstance(specs, DictConfig)
    if isinstance(specs, str):
        raise AdapterConfigError(f"adapters={specs!r} is one value; give a list: adapters=[{specs}]")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, tokenizer = load_backbone(cfg.backbone.path)
    engine = Engine(model, tokenizer, max_length=cfg.max_length, max_texts=cfg.max_texts,
                    max_new_tokens=cfg.max_new_tokens)
    for i, (name, spec) in enumerate(specs.items() if named else [(None, s) for s in specs]):
        path = engine.locate(str(spec))
        engine.load(path, name if named else name_for(model, path, i), str(spec))
    return engine


def run(overrides: list[str]) -> int:
    from ..run import settings

    if {"-h", "--help"} & set(overrides):
        from ..cli import command_help

        return command_help("serve")
    cfg = settings.load("serve", overrides)
    engine = engine_from(cfg)
    import uvicorn

    from .app import create_app

    app = create_app(engine, max_batch=cfg.max_batch, batch_window_ms=cfg.batch_window_ms,
                     max_body_bytes=cfg.max_body_bytes)
    print(f"serving {len(engine.adapters)} adapter(s) ({', '.join(engine.adapters) or 'none yet'}) on "
          f"http://{cfg.host}:{cfg.port}", file=sys.stderr)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
    return 0
