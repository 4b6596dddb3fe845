"""``adapterctl serve``, the command: one line starts a server that answers; bad settings are
one-line errors."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from clitools import make_tiny_bert, spawn
from test_serve import LABELS, save_adapter

from adapterctl.errors import AdapterConfigError
from adapterctl.serve import cli as serve_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_command_serves_the_adapters(tmp_path):
    backbone = make_tiny_bert(tmp_path / "backbone")
    a = save_adapter(tmp_path / "adapters", backbone, "a", seed=0)
    b = save_adapter(tmp_path / "adapters", backbone, "b", seed=1)
    port = _free_port()
    proc = spawn("serve", f"backbone.path={backbone}", f"adapters=[{a},{b},{a}]", f"port={port}", cwd=tmp_path)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, f"adapterctl serve exited with {proc.returncode}"
                assert time.time() < deadline, "the server did not start in 120 s"
                time.sleep(0.25)
        names = [x["name"] for x in httpx.get(f"{url}/v1/adapters").json()["adapters"]]
        assert names == ["a", "b", "a_2"]  # the third is saved as "a" too
        got = httpx.post(f"{url}/v1/predict", json=[{"adapter": n, "text": "fine"} for n in ("a", "a_2")])
        first, third = got.json()["predictions"]
        assert first["label"] in LABELS and first["scores"] == third["scores"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_one_value_for_adapters_names_the_list_form():
    with pytest.raises(AdapterConfigError, match=r"'some/folder' is one value; give a list: adapters=\[some/folder\]"):
        serve_cli.run(["adapters=some/folder"])
