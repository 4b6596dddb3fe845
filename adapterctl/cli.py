"""``adapterctl <command> key=value ...``: one entry point, Hydra-composed from ``conf/``.

Commands: train, evaluate, predict, generate, export, fuse, recipes, hub, serve. ``-m``/``--multirun``
sweeps comma-separated values (``adapter=houlsby,pfeiffer seed=1,2``): one run folder per
combination and a summary of their metrics. User errors print as one line, no traceback.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

USAGE = """usage: adapterctl <command> [-m] [key=value ...]

commands:
  train      train an adapter (or the full model: adapter=none) on a task
  evaluate   score a run (run=<folder>) or an adapter (adapter=<folder> task=<task>)
  predict    labels and scores for texts (text=...) or a file (file=...)
  generate   text from a decoder with an adapter, streamed (adapter=<folder> prompt="...")
  export     pack a run's adapter with its Hub card (run=<folder>); merge=true: a merged checkpoint
  fuse       train an AdapterFusion over adapters (adapters=[a,b,c] task=<task>)
  recipes    list the whole-run recipes in recipes/
  hub        search, pull and push adapters (adapterctl hub --help)
  serve      serve adapters over HTTP (adapters=[...] port=8080)

-m, --multirun   one run per combination of comma-separated values
adapterctl <command> --help   the command's keys and config groups
adapterctl <command> --cfg job   print the composed config without running (--resolve, --info)
adapterctl --version
"""

# command -> module (with run(args) or main(args)); export, fuse and hub belong to other parts.
COMMANDS = {
    "train": "adapterctl.run.train",
    "evaluate": "adapterctl.run.evaluate",
    "predict": "adapterctl.run.predict",
    "generate": "adapterctl.run.generate",
    "export": "adapterctl.run.export",
    "fuse": "adapterctl.run.fuse",
    "hub": "adapterctl.hub.cli",
    "serve": "adapterctl.serve.cli",
}
CONFIGURED = ("train", "evaluate", "predict", "generate", "fuse")  # commands composed from conf/<command>.yaml
SWEEPABLE = ("train", "fuse")  # commands whose runs write a folder with metrics.json


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 1 user error, 2 usage)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] in ("--version", "-V", "version"):
        from . import __version__

        print(f"adapterctl {__version__}")
        return 0
    command, args = argv[0], argv[1:]
    from .errors import AdapterError

    try:
        if command == "recipes":
            return list_recipes()
        if command not in COMMANDS:
            print(f"adapterctl: unknown command {command!r}; choose one of {', '.join([*COMMANDS, 'recipes'])}",
                  file=sys.stderr)
            return 2
        if command in CONFIGURED:
            return configured(command, args)
        module = _module(command)
        result = module.run(args) if hasattr(module, "run") else module.main(args)
        return result if isinstance(result, int) else 0
    except (AdapterError, FileExistsError) as e:
        print(f"adapterctl {command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"adapterctl {command}: interrupted", file=sys.stderr)
        return 130


def configured(command: str, args: list[str]) -> int:
    """A command composed from ``conf/<command>.yaml``. The config is composed and checked before
    the command's module (and torch, transformers) is imported: ``--help``, ``--cfg`` and
    config errors answer at once."""
    if {"-h", "--help"} & set(args):
        return command_help(command)
    from .errors import AdapterConfigError
    from .run import settings

    settings.reject_flags(command, args)
    flags = {a.split("=")[0] for a in args if a.startswith("-")}
    which = _flag_value(args, ("--cfg", "-c"))
    overrides = _drop_flags(args)
    if which or flags & {"--resolve", "--info", "-i"}:
        return show_config(command, overrides, which, resolve="--resolve" in flags, info=bool(flags & {"--info", "-i"}))
    if flags & {"-m", "--multirun"}:
        if command not in SWEEPABLE:
            raise AdapterConfigError(f"multirun (-m) works with {' and '.join(SWEEPABLE)}; run {command} once per value")
        return multirun_(command, overrides)
    cfg = settings.prepare(command, overrides)
    result = _module(command).run(cfg, overrides)
    return result if isinstance(result, int) else 0


def _flag_value(args: list[str], names: tuple[str, ...]) -> str | None:
    """The value of ``--cfg job`` or ``--cfg=job``; ``job`` when given bare."""
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in names:
            if eq:
                return value
            following = args[i + 1] if i + 1 < len(args) else ""
            return following if following in ("job", "hydra", "all") else "job"
    return None


def _drop_flags(args: list[str]) -> list[str]:
    """The ``key=value`` overrides without the flags (and ``--cfg``'s value)."""
    out = []
    for i, arg in enumerate(args):
        if arg.startswith("-") or (i and args[i - 1] in ("--cfg", "-c") and arg in ("job", "hydra", "all")):
            continue
        out.append(arg)
    return out


def show_config(command: str, overrides: list[str], which: str | None, resolve: bool, info: bool) -> int:
    """Hydra's habits without running: ``--cfg job|hydra|all`` prints the composed config
    (``--resolve``: interpolations resolved), ``--info`` where it comes from."""
    from omegaconf import OmegaConf

    from .errors import AdapterConfigError
    from .run import settings

    if which not in (None, "job", "hydra", "all"):
        raise AdapterConfigError(f"--cfg {which}: give --cfg job, --cfg hydra or --cfg all")
    cfg = settings.compose_config(command, overrides, with_hydra=True)
    OmegaConf.set_struct(cfg, False)
    hydra = cfg.pop("hydra")
    if info:
        from . import __version__

        choices = " ".join(f"{k}={v}" for k, v in hydra.runtime.choices.items() if not k.startswith("hydra/")
                           and k != "trainer/schema")
        print(f"adapterctl {__version__}, command {command}\nconfig: {settings.conf_dir() / command}.yaml\n"
              f"recipes: {settings.recipes_dir()}\nchoices: {choices}\noverrides: {' '.join(overrides) or 'none'}")
    if which in ("job", "all"):
        print(OmegaConf.to_yaml(cfg, resolve=resolve), end="")
    if which in ("hydra", "all"):
        print(OmegaConf.to_yaml({"hydra": hydra}, resolve=False), end="")
    if which is None and resolve and not info:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
    return 0


def command_help(command: str) -> int:
    """``adapterctl <command> --help``: the command's config file, whose comments say what each
    key does, the options of each config group, and the trainer's keys with types and defaults."""
    from .run import schema
    from .run.paths import conf_dir

    conf = conf_dir()
    print(f"usage: adapterctl {command} [-m] [key=value ...]   (Hydra overrides; conf: {conf})\n")
    text = (conf / f"{command}.yaml").read_text()
    print(text)
    print("config groups: group=option picks a file, group.key=value changes one key (trainer.lr=1e-3)")
    for group in sorted(p for p in conf.iterdir() if p.is_dir() and f"- {p.name}:" in text):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        print(f"  {group.name:9s} {', '.join(options)}")
    print(f"each option's keys, with comments: {conf}/<group>/<option>.yaml (e.g. adapter/houlsby.yaml)")
    if "- trainer:" in text:
        print("\ntrainer keys (types and defaults: adapterctl/run/schema.py):")
        for key, kind, default, about in schema.describe():
            print(f"  {key:<38s} {kind:<14s} {default:<8s} {about}")
    print("\n--cfg job|all prints the composed config without running (--resolve: values resolved), --info where "
          "it comes from")
    return 0


def _module(command: str):
    from .errors import AdapterConfigError

    try:
        return importlib.import_module(COMMANDS[command])
    except ModuleNotFoundError as e:
        if e.name and COMMANDS[command].startswith(e.name):
            raise AdapterConfigError(f"the {command} command is not available in this installation yet") from None
        raise


def multirun_(command: str, overrides: list[str]) -> int:
    """Each combination runs in its own folder under ``outputs/<command>/<date>_<time>/<n>``;
    ``summary.json`` and ``summary.csv`` there list each job's overrides and metrics. Every
    combination is composed and checked before the first job starts; a job that fails still
    leaves the summary of the jobs before it (and its error)."""
    from .errors import AdapterConfigError
    from .run import folders, settings

    if any(a.startswith("output_dir=") for a in overrides):
        raise AdapterConfigError("output_dir cannot be set in a multirun: each job gets its own folder")
    jobs = settings.sweep(command, overrides)
    module = _module(command)
    sweep_dir = folders.new_folder(command, None)
    print(f"multirun: {len(jobs)} job(s) in {sweep_dir}", file=sys.stderr)
    summary = []
    try:
        for n, job in enumerate(jobs):
            job = [*job, f"output_dir={sweep_dir / str(n)}"]
            try:
                folder = module.run(settings.prepare(command, job), job)
            except Exception as e:
                summary.append({"job": n, "overrides": job[:-1], "folder": str(sweep_dir / str(n)), "error": str(e)})
                raise
            summary.append({"job": n, "overrides": job[:-1], "folder": str(folder),
                            **json.loads((Path(folder) / folders.METRICS_JSON).read_text())})
    finally:
        if summary:
            folders.write_json(sweep_dir / "summary.json", {"jobs": summary})
            _write_summary_csv(sweep_dir / "summary.csv", summary)
    print((sweep_dir / "summary.csv").read_text(), end="")
    return 0


def _write_summary_csv(path: Path, rows: list[dict]) -> None:
    import csv

    keys = ["job", "overrides"] + sorted({k for r in rows for k in r} - {"job", "overrides", "folder"}) + ["folder"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows({**r, "overrides": " ".join(r["overrides"])} for r in rows)


def list_recipes() -> int:
    """Each recipe's name, the first line of its description and its launch command."""
    from .run.paths import recipes_dir

    found = sorted(recipes_dir().glob("*.yaml"))
    if not found:
        print(f"no recipes in {recipes_dir()}")
        return 0
    for path in found:
        comments = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
        launch = next((c for c in comments if c.startswith("adapterctl ")), f"adapterctl train recipe={path.stem}")
        about = next((c for c in comments if c and not c.startswith("adapterctl ")), "")
        print(f"{path.stem:<34}{about}\n{'':<34}$ {launch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
