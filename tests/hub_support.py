"""Helpers for the Hub tests: run folders made from tiny models, and a local HTTP server."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from pathlib import Path

import torch
from conftest import batch, perturb, tiny_model

LABELS = ["neg", "pos"]


def make_run(folder: Path, name: str = "rt", preset: str = "pfeiffer", family: str = "bert", seed: int = 0,
             task: str = "rotten_tomatoes", accuracy: float = 0.81):
    """A finished training run's folder as the runner writes it, around a tiny model whose
    adapter and head hold random (non-identity) weights; returns (folder, model)."""
    model = tiny_model(family)
    model.add_adapter(name, preset)
    model.add_head(name, "classification", num_labels=2, id2label=LABELS)
    perturb(model, f".{name}.", seed=seed)
    model.set_active_adapters(name)
    folder.mkdir(parents=True)
    model.save_adapter(folder / "adapters" / name, name, with_head=True)
    run = {
        "command": "train", "task": task, "dataset": task, "dataset_subset": None,
        "backbone": {"name": "tiny", "path": f"tiny-{family}"},
        "adapter": {"name": name, "preset": preset, "config": None, "dir": f"adapters/{name}"},
        "full_model_dir": None, "head": {"type": "classification"}, "label_names": LABELS,
        "metrics": ["accuracy", "f1"], "main_metric": "accuracy", "seed": seed,
    }
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "f1": 0.8, "best_step": 10, "steps": 20}))
    (folder / "config.yaml").write_text(f"seed: {seed}\n")
    return folder, model


def logits(model, name: str) -> torch.Tensor:
    model.set_active_adapters(name)
    with torch.no_grad():
        return model(**batch()).logits


class HubHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that honours ``Range`` (as nginx does) and records its requests.

    ``drop_after``: on the first request for a ``.zip``, send the headers for the whole file but
    only this many bytes of it, then close the connection, as a flaky network does.
    ``truncate_every``: do that on every request (a download that never completes).
    """

    drop_after: int | None = None
    truncate_every = False
    requests: list

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        zip_requests = [r for r in self.requests if r[0].endswith(".zip")]
        self.requests.append((self.path, self.headers.get("Range")))
        if not path.is_file() or not path.name.endswith(".zip"):
            return super().do_GET()
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        if start >= len(data) and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        body = data[start:]
        if self.drop_after is not None and (self.truncate_every or not zip_requests):
            body = body[: self.drop_after]
            self.close_connection = True
        self.wfile.write(body)


@contextlib.contextmanager
def serve(root: Path, handler=http.server.SimpleHTTPRequestHandler, **attrs):
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread; yields (base URL, request log)."""
    log: list = []
    cls = type("Handler", (handler,), {"requests": log, "log_message": lambda *a: None, **attrs})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(cls, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def files_in(folder: Path) -> list[str]:
    """Every file left under ``folder`` (what a failed pull must not leave behind)."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if not p.is_dir())
