"""Stress one hub folder: N processes push and pull at once for R rounds, then check all of it.

In each round every worker pushes new weights under one identifier they all share (so pushes
race for the same card and version numbers), pushes new weights under its own identifier (so
different cards race for the index), and pulls a random listed version into its own cache,
where the cache verifies it. At the end, ``index.check`` must find nothing wrong (every card
validates, every listed zip matches its size and sha256, the index equals the cards) and every
push that reported success must be listed, at the version it reported, with its sha256.

    python bench/hub_stress.py                      # 8 processes, 25 rounds
    python bench/hub_stress.py --processes 4 --rounds 100 --hub /shared/hub

Prints the counts; exits 1 if anything is inconsistent or lost. tests/test_hub_concurrency.py
runs it small. Workers are forked after the imports, so they start together and at once.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from adapterctl.errors import AdapterError
from adapterctl.hub import Cache, Hub, find, pull
from adapterctl.hub import index
from adapterctl.hub.card import architecture, dump_card, read_card
from adapterctl.hub.export import make_card
from adapterctl.hub.pack import pack
from adapterctl.hub.publish import publish

SHARED = "shared"


def make_export(folder: Path, subtask: str, rng: random.Random) -> Path:
    """An export folder (card.yaml + zip) of an adapter with random weights, without torch: the
    hub checks bytes and cards, not what the weights mean."""
    adapter = folder / "adapter"
    adapter.mkdir(parents=True)
    config = architecture("pfeiffer")["config"]
    envelope = {"config": config, "hidden_size": 32, "model_type": "bert", "model_name": "tiny-bert", "name": subtask}
    (adapter / "adapter_config.json").write_text(json.dumps(envelope))
    (adapter / "adapter.safetensors").write_bytes(rng.randbytes(rng.randint(1_000, 20_000)))
    archive = pack(adapter, folder / "adapter.zip")
    run = {"task": subtask, "metrics": [], "adapter": {"preset": "pfeiffer"}, "backbone": {"path": "tiny-bert"}}
    card = make_card(run, {}, envelope, archive, org="stress", task="stress")
    (folder / "card.yaml").write_text(dump_card(card))
    return folder


def worker(n: int, hub: Path, work: Path, rounds: int, seed: int, start, results) -> None:
    out = {"pushed": [], "unchanged": 0, "push_errors": [], "pulls": 0, "pull_errors": []}
    try:
        start.wait()
        _rounds(n, hub, work, rounds, random.Random(seed * 1000 + n), out)
    except BaseException as e:  # noqa: BLE001 - reported as a problem, never a hang
        out["push_errors"].append(f"worker {n} crashed: {e!r}")
    finally:
        results.put((n, out))


def _rounds(n: int, hub: Path, work: Path, rounds: int, rng: random.Random, out: dict) -> None:
    for r in range(rounds):
        for subtask in (SHARED, f"worker{n}"):
            export = make_export(work / f"{n}-{r}-{subtask}", subtask, rng)
            sha = read_card(export / "card.yaml")["files"][0]["sha256"]
            try:
                done = publish(export, hub)
            except (AdapterError, OSError) as e:
                out["push_errors"].append(f"{subtask}: {e}")
                continue
            if done.new:
                out["pushed"].append({"card": str(done.card), "version": done.version, "sha256": sha})
            else:
                out["unchanged"] += 1
        try:
            entries = Hub(hub).entries
            entry = rng.choice(entries)
            version = rng.choice(entry.versions)
            pull(find(f"{entry.id}:{version}", str(hub)), Cache(work / f"cache-{n}"), progress=False)
            out["pulls"] += 1
        except (AdapterError, OSError, IndexError) as e:
            out["pull_errors"].append(str(e))


def lost(hub: Path, pushed: list[dict]) -> list[str]:
    """Pushes that reported success but whose version is not listed with their sha256."""
    problems = []
    for push in pushed:
        card = read_card(Path(push["card"])) if Path(push["card"]).is_file() else {"files": []}
        listed = {f["version"]: f["sha256"] for f in card["files"]}
        if listed.get(push["version"]) != push["sha256"]:
            problems.append(f"{push['card']}: version {push['version']} reported pushed, but the card lists "
                            f"{listed.get(push['version'], 'nothing')} for it")
    return problems


def stress(hub: Path, processes: int, rounds: int, seed: int = 0) -> dict:
    """Run the workers against ``hub`` and check it; returns the counts and the problems."""
    hub = Path(hub)
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="hub-stress-") as tmp:
        workers = [ctx.Process(target=worker, args=(n, hub, Path(tmp), rounds, seed, start, results))
                   for n in range(processes)]
        for w in workers:
            w.start()
        began = time.perf_counter()
        start.set()
        outs = dict(results.get(timeout=600) for _ in workers)
        for w in workers:
            w.join()
        seconds = time.perf_counter() - began
    pushed = [p for o in outs.values() for p in o["pushed"]]
    problems = index.check(hub) + lost(hub, pushed)
    problems += [f"worker {n} exited with {w.exitcode}" for n, w in enumerate(workers) if w.exitcode]
    entries = index.scan(hub)
    return {
        "processes": processes, "rounds": rounds, "seconds": round(seconds, 2),
        "pushes_ok": len(pushed), "pushes_unchanged": sum(o["unchanged"] for o in outs.values()),
        "push_errors": [e for o in outs.values() for e in o["push_errors"]],
        "pulls_ok": sum(o["pulls"] for o in outs.values()),
        "pull_errors": [e for o in outs.values() for e in o["pull_errors"]],
        "cards": len(entries), "versions": sum(len(e.versions) for e in entries),
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=8)
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hub", help="the hub folder to stress (default: a new temporary one)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    architecture("pfeiffer")  # load what validating a card needs once, before forking
    with tempfile.TemporaryDirectory(prefix="hub-") as tmp:
        result = stress(Path(args.hub or tmp), args.processes, args.rounds, args.seed)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['processes']} processes x {result['rounds']} rounds in {result['seconds']} s: "
              f"{result['pushes_ok']} pushes published, {len(result['push_errors'])} refused, "
              f"{result['pulls_ok']} pulls verified, {len(result['pull_errors'])} failed; "
              f"hub: {result['cards']} cards, {result['versions']} versions; "
              f"{len(result['problems'])} problems")
        for line in result["push_errors"] + result["pull_errors"] + result["problems"]:
            print("  " + line)
    return 1 if result["problems"] or result["push_errors"] or result["pull_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
