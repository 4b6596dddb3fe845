"""POST /v1/generate on a tiny Llama (MiniLM's tokenizer, random weights): streamed and whole
answers equal the library's greedy generation with the same adapter, prompts for different
adapters share a batch, bad requests are JSON errors and a client that leaves stops its row."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import httpx
import pytest
import torch
from clitools import MINILM, TOKENIZER_FILES
from conftest import llama_config, perturb
from test_serve import Server, _metric
from transformers import AutoTokenizer, LlamaForCausalLM

from adapterctl import AdapterModel
from adapterctl.core.backbone import backbone_path
from adapterctl.serve import Engine, create_app
from adapterctl.serve.generation import end_of_sequence

PROMPTS = ["hello world", "good night", "blue sky", "red car"]  # as many tokens each: no padding


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    torch.manual_seed(0)
    config = llama_config()
    config.vocab_size = 30522  # MiniLM's tokenizer
    LlamaForCausalLM(config).save_pretrained(root / "llama")
    for name in TOKENIZER_FILES:
        shutil.copy(f"{backbone_path(MINILM)}/{name}", root / "llama" / name)
    model = AdapterModel.from_pretrained(root / "llama")
    folders = {}
    for seed, (name, config) in enumerate([("pf", "pfeiffer"), ("lo", "lora")]):
        model.add_adapter(name, config)
        perturb(model, f".{name}.", std=0.5, seed=seed)
        folders[name] = model.save_adapter(root / name, name)
    return root / "llama", folders


def library(setup, adapter, prompt, max_new_tokens):
    """The library's greedy continuation of ``prompt`` with ``adapter``, alone."""
    backbone, folders = setup
    model = AdapterModel.from_pretrained(backbone).eval()
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    if adapter:
        model.load_adapter(folders[adapter])
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad(), model.adapter_setup(adapter, head="default"):
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=sorted(end_of_sequence(model, tokenizer)), pad_token_id=0)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True), out.shape[1] - ids.shape[1]


@pytest.fixture(scope="module")
def server(setup):
    backbone, folders = setup
    engine = Engine(AdapterModel.from_pretrained(backbone), AutoTokenizer.from_pretrained(backbone), max_length=64,
                    max_new_tokens=16)
    for folder in folders.values():
        engine.load(folder)
    with Server(create_app(engine, batch_window_ms=50)) as s:
        yield s


def events(response) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: ")]


def test_a_stream_equals_the_library(setup, server):
    with httpx.stream("POST", f"{server.url}/v1/generate", timeout=60,
                      json={"adapter": "pf", "prompt": PROMPTS[0], "max_new_tokens": 8}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        got = events(r)
    *pieces, last = got
    text, tokens = library(setup, "pf", PROMPTS[0], 8)
    assert last["done"] and last["adapter"] == "pf" and last["text"] == text and last["tokens"] <= tokens
    assert "".join(p["text"] for p in pieces) == text and len(pieces) >= 1
    assert last["finish_reason"] == ("length" if last["tokens"] == 8 else "eos")


def test_prompts_for_different_adapters_share_a_batch(setup, server):
    adapters = ["pf", "lo", None, "pf"]

    async def ask(adapter, prompt):
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            r = await c.post("/v1/generate", json={"adapter": adapter, "prompt": prompt, "max_new_tokens": 6,
                                                   "stream": False})
            return r.status_code, r.json()

    async def together():
        return await asyncio.gather(*[ask(a, p) for a, p in zip(adapters, PROMPTS)])

    before = _metric(server.url, "adapterctl_batch_rows_count")
    answers = asyncio.run(together())
    for (status, body), adapter, prompt in zip(answers, adapters, PROMPTS):
        assert status == 200, body
        assert body["text"] == library(setup, adapter, prompt, 6)[0]
    assert _metric(server.url, "adapterctl_batch_rows_count") - before < 4  # some shared a batch
    assert len({body["text"] for _, body in answers}) > 1


@pytest.mark.parametrize("body, status, says", [
    ({"adapter": "nope", "prompt": "x"}, 404, "no adapter 'nope' is loaded (loaded: pf, lo)"),
    ({"adapter": "pf", "prompt": "x", "max_new_tokens": 17}, 422, "give 1 to 16"),
    ({"adapter": "pf", "prompt": "word " * 60}, 413, "over the limit of 64 in all"),
    ({"adapter": "pf", "prompt": "x", "temperature": -1}, 422, "temperature"),
])
def test_bad_generate_requests_are_json_errors(server, body, status, says):
    r = httpx.post(f"{server.url}/v1/generate", json=body, timeout=30)
    assert r.status_code == status and says in r.json()["error"]["message"], r.text


def test_predict_on_a_language_model_adapter_says_where_to_go(server):
    r = httpx.post(f"{server.url}/v1/predict", json={"adapter": "pf", "text": "x"}, timeout=30)
    assert r.status_code == 422 and "it answers POST /v1/generate" in r.json()["error"]["message"]


def test_a_client_that_leaves_mid_stream_stops_its_row(server):
    before = _metric(server.url, "adapterctl_client_disconnects_total")
    with httpx.stream("POST", f"{server.url}/v1/generate", timeout=60,
                      json={"adapter": "lo", "prompt": PROMPTS[1], "max_new_tokens": 16}) as r:
        next(r.iter_lines())  # the first event, then hang up
    deadline = time.time() + 20
    while _metric(server.url, "adapterctl_client_disconnects_total") == before and time.time() < deadline:
        time.sleep(0.05)
    assert _metric(server.url, "adapterctl_client_disconnects_total") == before + 1
    r = httpx.post(f"{server.url}/v1/generate", json={"adapter": "lo", "prompt": "x", "stream": False}, timeout=60)
    assert r.status_code == 200 and r.json()["done"]
