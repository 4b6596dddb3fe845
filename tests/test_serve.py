"""``adapterctl serve``'s HTTP API on 127.0.0.1, a tiny BERT with MiniLM's tokenizer and
adapters with random (non-identity) weights: answers equal the library's, adapters come and go
while requests run, every bad input is a JSON error and the server stays up."""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from clitools import make_tiny_bert
from conftest import perturb, tiny_model
from transformers import AutoTokenizer

from adapterctl import AdapterModel
from adapterctl.serve import Engine, create_app
from adapterctl.serve.batcher import Batcher

LABELS = ["neg", "pos"]
TEXTS = ["a gripping, funny film", "dull", "the plot goes nowhere, slowly, for two long hours", "yes!"]


def save_adapter(folder: Path, backbone: Path, name: str, seed: int, head: str = "classification",
                 labels=LABELS) -> Path:
    """An adapter with its head, random weights, saved as the library saves it."""
    model = AdapterModel.from_pretrained(backbone)
    model.add_adapter(name, "pfeiffer")
    model.add_head(name, head, id2label=labels)
    perturb(model, f".{name}.", seed=seed)
    return model.save_adapter(folder / name, name)


class Server:
    """uvicorn in a thread, on a port the OS picks."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    backbone = make_tiny_bert(root / "backbone")
    folders = {name: save_adapter(root / "adapters", backbone, name, seed) for seed, name in enumerate(["a", "b", "c"])}
    folders["tags"] = save_adapter(root / "adapters", backbone, "tags", 7, head="tagging", labels=["O", "B", "I"])
    return backbone, folders, root


@functools.cache
def _library(backbone: Path, folder: Path):
    model = AdapterModel.from_pretrained(backbone).eval()
    model.load_adapter(folder, set_active=True)
    return model, AutoTokenizer.from_pretrained(backbone)


def reference(backbone: Path, folder: Path, name: str, text: str):
    """The library's logits for one text, alone in its batch."""
    model, tokenizer = _library(backbone, folder)
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits[0]


def engine_for(setup, names=("a", "b", "c"), **kw) -> Engine:
    backbone, folders, _ = setup
    engine = Engine(AdapterModel.from_pretrained(backbone), AutoTokenizer.from_pretrained(backbone), **kw)
    for name in names:
        engine.load(folders[name])
    return engine


@pytest.fixture(scope="module")
def server(setup):
    with Server(create_app(engine_for(setup, max_length=32, max_texts=16), batch_window_ms=20,
                           max_body_bytes=4096)) as s:
        yield s


def predict(url, adapter, text, **kw):
    return httpx.post(f"{url}/v1/predict", json={"adapter": adapter, "text": text, **kw}, timeout=30)


def test_predictions_equal_the_library(setup, server):
    backbone, folders, _ = setup
    body = [{"adapter": name, "text": TEXTS} for name in ("a", "b", "c")]
    r = httpx.post(f"{server.url}/v1/predict", json=body, timeout=30)
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert [p["adapter"] for p in got] == [n for n in ("a", "b", "c") for _ in TEXTS]
    for p, (name, text) in zip(got, [(n, t) for n in ("a", "b", "c") for t in TEXTS]):
        probs = reference(backbone, folders[name], name, text).softmax(-1)
        assert p["label"] == LABELS[int(probs.argmax())]
        assert p["scores"] == pytest.approx(dict(zip(LABELS, probs.tolist())), abs=1e-5)
    assert len({round(p["scores"]["pos"], 6) for p in got}) == len(got)  # the adapters differ


def test_tagging_heads_answer_a_label_per_word_piece(setup, server):
    """A tagging row and a classification row in one request (one batch), each with its head."""
    backbone, folders, _ = setup
    r = httpx.post(f"{server.url}/v1/adapters", json={"source": str(folders["tags"])}, timeout=30)
    assert r.status_code == 201, r.text
    assert r.json()["head"] == "tagging" and r.json()["labels"] == ["O", "B", "I"]
    try:
        body = [{"adapter": "tags", "text": "a gripping film"}, {"adapter": "a", "text": "a gripping film"}]
        got, sentence = httpx.post(f"{server.url}/v1/predict", json=body, timeout=30).json()["predictions"]
        logits = reference(backbone, folders["tags"], "tags", "a gripping film")[1:-1]  # without [CLS], [SEP]
        assert got["tokens"] == ["a", "gripping", "film"]
        assert got["labels"] == [["O", "B", "I"][i] for i in logits.argmax(-1).tolist()]
        probs = reference(backbone, folders["a"], "a", "a gripping film").softmax(-1)
        assert sentence["scores"] == pytest.approx(dict(zip(LABELS, probs.tolist())), abs=1e-5)
    finally:
        httpx.delete(f"{server.url}/v1/adapters/tags")


def test_list_health_and_metrics(server):
    listed = httpx.get(f"{server.url}/v1/adapters").json()
    assert [a["name"] for a in listed["adapters"]] == ["a", "b", "c"]
    assert listed["adapters"][0]["head"] == "classification" and listed["adapters"][0]["method"] == "pfeiffer"
    assert listed["backbone"]["model_type"] == "bert" and listed["backbone"]["hidden_size"] == 32
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    predict(server.url, "a", "fine")
    text = httpx.get(f"{server.url}/metrics").text
    assert 'adapterctl_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert "adapterctl_batch_rows_bucket" in text and "adapterctl_request_seconds_bucket" in text
    assert "adapterctl_adapters_loaded 3.0" in text


def test_eight_concurrent_clients_get_their_own_answers(setup, server):
    expected = {(n, t): httpx.post(f"{server.url}/v1/predict", json={"adapter": n, "text": t}).json()["predictions"][0]
                for n in ("a", "b", "c") for t in TEXTS}

    async def client(k: int):
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            answers = []
            for i in range(6):
                name, text = "abc"[(k + i) % 3], TEXTS[(k * 7 + i) % len(TEXTS)]
                r = await c.post("/v1/predict", json={"adapter": name, "text": text})
                answers.append((r.status_code, (name, text), r.json()["predictions"][0]))
            return answers

    async def clients():
        return await asyncio.gather(*[client(k) for k in range(8)])

    answers = [a for batch in asyncio.run(clients()) for a in batch]
    assert len(answers) == 48 and all(status == 200 for status, _, _ in answers)
    for _, key, got in answers:
        assert got["label"] == expected[key]["label"]
        assert got["scores"] == pytest.approx(expected[key]["scores"], abs=1e-5)


def test_load_and_unload_while_requests_run(setup, server):
    backbone, folders, root = setup
    extra = save_adapter(root / "more", backbone, "d", seed=11)
    stop, statuses = threading.Event(), []

    def hammer():
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                statuses.append(c.post("/v1/predict", json={"adapter": "a", "text": TEXTS}).status_code)

    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(hammer) for _ in range(2)]
        try:
            for round_ in range(2):
                r = httpx.post(f"{server.url}/v1/adapters", json={"source": str(extra), "name": "d2"}, timeout=30)
                assert r.status_code == 201, r.text
                got = predict(server.url, "d2", TEXTS[0]).json()["predictions"][0]
                probs = reference(backbone, extra, "d", TEXTS[0]).softmax(-1)
                assert got["scores"] == pytest.approx(dict(zip(LABELS, probs.tolist())), abs=1e-5)
                assert httpx.delete(f"{server.url}/v1/adapters/d2").status_code == 200
                gone = predict(server.url, "d2", TEXTS[0])
                assert gone.status_code == 404 and gone.json()["error"]["adapters"] == ["a", "b", "c"]
        finally:
            stop.set()
            for job in jobs:
                job.result()
    assert statuses and set(statuses) == {200}


@pytest.fixture(scope="module")
def other_backbone_adapter(tmp_path_factory):
    model = tiny_model("roberta")  # hidden 32 too: only the family differs
    model.add_adapter("rob", "pfeiffer")
    model.add_head("rob", "classification", id2label=LABELS)
    return model.save_adapter(tmp_path_factory.mktemp("rob") / "rob", "rob")


@pytest.mark.parametrize("request_, status, says", [
    (("POST", "/v1/predict", {"adapter": "nope", "text": "x"}), 404, "no adapter 'nope' is loaded (loaded: a, b, c)"),
    (("POST", "/v1/predict", b'{"adapter": "a", "text": '), 400, "not valid JSON"),
    (("POST", "/v1/predict", {"adapter": "a", "text": "word " * 40}), 413, "42 tokens long, over the limit of 32"),
    (("POST", "/v1/predict", {"adapter": "a", "text": ["x"] * 17}), 413, "17 texts in one request; send at most 16"),
    (("POST", "/v1/predict", {"adapter": "a", "text": "x" * 5000}), 413, "5025 bytes, over the limit of 4096"),
    (("POST", "/v1/predict", {"adapter": "a"}), 422, "text: Field required"),
    (("POST", "/v1/predict", "adapter=a&text=x"), 415, "send JSON with Content-Type: application/json"),
    (("POST", "/v1/predict", {"adapter": "a", "text": ["x", "y"], "text_pair": ["z"]}), 422, "one pair per text"),
    (("POST", "/v1/adapters", {"source": "ROB"}), 409, "trained for a roberta model, but this model is bert"),
    (("POST", "/v1/adapters", {"source": "A"}), 409, "an adapter named 'a' is already loaded"),
    (("POST", "/v1/adapters", {"source": "no such folder"}), 422, "neither an adapter folder nor a hub identifier"),
    (("DELETE", "/v1/adapters/nope", None), 404, "no adapter 'nope' is loaded"),
    (("GET", "/v2/anything", None), 404, "Not Found"),
])
def test_bad_input_is_a_json_error_and_the_server_stays_up(setup, server, other_backbone_adapter, request_, status,
                                                          says):
    method, path, body = request_
    if isinstance(body, dict) and body.get("source") in ("ROB", "A"):
        body = {"source": str(other_backbone_adapter if body["source"] == "ROB" else setup[1]["a"])}
    kw = ({"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes)
          else {"data": dict(p.split("=") for p in body.split("&"))} if isinstance(body, str) else {"json": body})
    r = httpx.request(method, f"{server.url}{path}", timeout=30, **kw)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"]
    assert predict(server.url, "a", "still up").status_code == 200
    assert [a["name"] for a in httpx.get(f"{server.url}/v1/adapters").json()["adapters"]] == ["a", "b", "c"]


def test_a_chunked_body_over_the_limit_is_refused(server):
    def chunks():
        for _ in range(10):
            yield b'{"adapter": "a", "text": "' + b"x" * 500

    r = httpx.post(f"{server.url}/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit of 4096" in r.json()["error"]["message"]


def _metric(url: str, name: str) -> float:
    line = next(ln for ln in httpx.get(f"{url}/metrics").text.splitlines() if ln.startswith(name + " "))
    return float(line.split()[1])


def test_a_client_that_leaves_mid_request_costs_nothing(setup):
    """The window is long, so the rows are still queued when the clients leave: they are dropped."""
    with Server(create_app(engine_for(setup, names=("a",)), batch_window_ms=500)) as s:
        port = int(s.url.rsplit(":", 1)[1])
        body = b'{"adapter": "a", "text": ["one", "two", "three"]}'
        head = (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        for payload in (head + body, head + body[:10]):  # the whole request, then half a body
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(payload)
            time.sleep(0.05)
        deadline = time.time() + 10
        while _metric(s.url, "adapterctl_rows_cancelled_total") < 3 and time.time() < deadline:
            time.sleep(0.05)
        assert _metric(s.url, "adapterctl_rows_cancelled_total") == 3
        assert _metric(s.url, "adapterctl_client_disconnects_total") == 1
        assert _metric(s.url, "adapterctl_batch_rows_count") == 0  # nothing ran for them
        assert predict(s.url, "a", "still here").status_code == 200


def test_rows_that_arrive_together_run_as_one_batch_up_to_max_batch(setup):
    engine = engine_for(setup)
    sizes = []
    run = engine.predict
    engine.predict = lambda rows: (sizes.append(len(rows)), run(rows))[1]

    async def main():
        batcher = Batcher(engine, max_batch=3, window_s=0.05)
        batcher.start()
        rows = [r for i, t in enumerate(TEXTS * 2) for r in engine.encode("abc"[i % 3], [t])]
        results = await asyncio.gather(*batcher.submit(rows))
        await batcher.stop()
        return rows, results

    rows, results = asyncio.run(main())
    assert sizes == [3, 3, 2]
    assert [r["adapter"] for r in results] == [row.adapter for row in rows]


def test_adapters_load_by_hub_id_verified_as_hub_pull(setup, tmp_path, monkeypatch):
    from hub_support import make_run

    from adapterctl.hub.publish import publish
    from adapterctl.hub.export import export_run

    backbone = setup[0]
    for name, family, task in [("rt", "bert", "rotten_tomatoes"), ("sst", "roberta", "sst2"), ("bad", "bert", "mrpc")]:
        run, _ = make_run(tmp_path / "runs" / name, name=name, family=family, task=task)
        publish(export_run(run, tmp_path / "exports" / name, org="me"), tmp_path / "hub")
    [archive] = (tmp_path / "hub").rglob("*_mrpc_*.zip")
    archive.write_bytes(archive.read_bytes()[:-40] + bytes(40))  # tampered: its sha256 no longer matches
    monkeypatch.setenv("ADAPTERCTL_HUB", str(tmp_path / "hub"))
    monkeypatch.setenv("ADAPTERCTL_CACHE", str(tmp_path / "cache"))
    with Server(create_app(engine_for(setup, names=()))) as s:
        r = httpx.post(f"{s.url}/v1/adapters", json={"source": "rotten_tomatoes@me"}, timeout=30)
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "rt" and r.json()["source"] == "rotten_tomatoes@me"
        got = predict(s.url, "rt", TEXTS[0]).json()["predictions"][0]
        [folder] = (tmp_path / "cache").rglob("adapter_config.json")
        probs = reference(backbone, folder.parent, "rt", TEXTS[0]).softmax(-1)
        assert got["scores"] == pytest.approx(dict(zip(LABELS, probs.tolist())), abs=1e-5)
        for source, status, says in [("sst2@me", 409, "exists, but not for model_type=bert, hidden_size=32"),
                                     ("qqp@me", 404, "no adapter qqp@me in the configured hubs"),
                                     ("mrpc@me", 422, "sha256")]:
            r = httpx.post(f"{s.url}/v1/adapters", json={"source": source}, timeout=30)
            assert r.status_code == status and says in r.json()["error"]["message"], r.text
        assert [a["name"] for a in httpx.get(f"{s.url}/v1/adapters").json()["adapters"]] == ["rt"]
