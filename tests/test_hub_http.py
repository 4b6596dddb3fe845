"""The Hub over a real HTTP server on 127.0.0.1: search, pull, load; and every way a download
can go wrong is refused with nothing half-written left in the cache."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_model
from hub_support import HubHandler, files_in, logits, make_run, serve

from adapterctl import hub
from adapterctl.cli import main
from adapterctl.errors import CorruptFileError
from adapterctl.hub import backends, index
from adapterctl.hub.errors import CardError, DownloadError, UnknownAdapterError
from adapterctl.hub.publish import publish
from adapterctl.hub.export import export_run

ID = "sentiment/rotten_tomatoes@ukp"


@pytest.fixture
def published(tmp_path):
    """A hub folder holding one pushed adapter; returns (hub folder, the model that made it)."""
    run, model = make_run(tmp_path / "run")
    publish(export_run(run, tmp_path / "export", org="ukp"), tmp_path / "hub")
    return tmp_path / "hub", model


def _zip_of(hub_root: Path) -> Path:
    [archive] = (hub_root / "adapters").rglob("*.zip")
    return archive


def test_search_pull_and_load_over_http(published, tmp_path, monkeypatch):
    hub_root, pushed = published
    with serve(hub_root) as (url, _):
        monkeypatch.setenv("ADAPTERCTL_HUB", url)
        monkeypatch.setenv("ADAPTERCTL_CACHE", str(tmp_path / "cache"))
        [entry] = index.search(hub.configured_hubs()[0].entries, task="sentiment", backbone="bert")
        assert entry.id == ID and entry.architecture == "pfeiffer" and entry.config_hash == "9076f36a74755ac4"
        model = tiny_model()  # the same backbone weights, no adapter yet
        name = model.load_adapter(ID, set_active=True)
    assert name == "rt"
    assert torch.equal(logits(model, "rt"), logits(pushed, "rt"))
    assert model.heads["rt"].config["label2id"] == {"neg": 0, "pos": 1}
    assert files_in(tmp_path / "cache") == sorted(
        f"adapters/ukp/sentiment/rotten_tomatoes/bert32-9076f36a74755ac4/1-{hashlib.sha256(_zip_of(hub_root).read_bytes()).hexdigest()[:16]}/{f}"
        for f in ("adapter.safetensors", "adapter_config.json", "head_config.json", "model_head.safetensors"))


def test_a_second_pull_uses_the_cache(published, tmp_path):
    hub_root, _ = published
    with serve(hub_root, HubHandler) as (url, log):
        first = hub.resolve(ID, hubs=url, cache=tmp_path / "cache")
        second = hub.resolve(ID, hubs=url, cache=tmp_path / "cache")
    assert first == second
    assert [p for p, _ in log if p.endswith(".zip")] == [f"/{_zip_of(hub_root).relative_to(hub_root)}"]


def test_dropped_connection_is_resumed_with_range_and_verified(published, tmp_path):
    hub_root, pushed = published
    size = _zip_of(hub_root).stat().st_size
    with serve(hub_root, HubHandler, drop_after=1000) as (url, log):
        folder = hub.resolve(ID, hubs=[hub.Hub(url, backoff=0)], cache=tmp_path / "cache")
    zips = [rng for p, rng in log if p.endswith(".zip")]
    assert zips == [None, "bytes=1000-"], f"expected a ranged retry after the drop, got {zips} (size {size})"
    model = tiny_model()
    model.load_adapter(str(folder), set_active=True)
    assert torch.equal(logits(model, "rt"), logits(pushed, "rt"))


def test_dropped_connection_on_a_server_without_range_starts_over(published, tmp_path):
    hub_root, _ = published

    class NoRange(HubHandler):
        def do_GET(self):
            if "Range" in self.headers:
                del self.headers["Range"]  # like a server that ignores Range: a full 200 answer
            super().do_GET()

    with serve(hub_root, NoRange, drop_after=1000) as (url, log):
        folder = hub.resolve(ID, hubs=[hub.Hub(url, backoff=0)], cache=tmp_path / "cache")
    assert (folder / "adapter.safetensors").is_file()
    assert len([p for p, _ in log if p.endswith(".zip")]) == 2


def test_a_download_that_never_completes_is_refused(published, tmp_path):
    hub_root, _ = published
    with serve(hub_root, HubHandler, drop_after=1000, truncate_every=True) as (url, log):
        with pytest.raises(DownloadError, match=r"failed after 3 tries \(\d+ bytes received; last error: IncompleteRead"):
            hub.resolve(ID, hubs=[hub.Hub(url, backoff=0, retries=2)], cache=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []


def test_truncated_file_on_the_hub_is_refused(published, tmp_path):
    hub_root, _ = published
    archive = _zip_of(hub_root)
    archive.write_bytes(archive.read_bytes()[:-100])
    with serve(hub_root, HubHandler) as (url, _):
        with pytest.raises(CorruptFileError, match=r"got \d+ bytes, the card says \d+; the download was truncated"):
            hub.resolve(ID, hubs=url, cache=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []


def test_tampered_file_is_refused(published, tmp_path):
    hub_root, _ = published
    archive = _zip_of(hub_root)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other contents
    archive.write_bytes(bytes(data))
    with serve(hub_root) as (url, _):
        with pytest.raises(CorruptFileError, match="sha256 .* does not match the card's .*tampered"):
            hub.resolve(ID, hubs=url, cache=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []


def test_unknown_identifier_lists_candidates(published, tmp_path):
    hub_root, _ = published
    with serve(hub_root) as (url, _):
        with pytest.raises(UnknownAdapterError, match=r"no adapter sentiment/rotten_tomato@ukp .*did you mean: "
                                                      r"sentiment/rotten_tomatoes@ukp"):
            hub.resolve("sentiment/rotten_tomato@ukp", hubs=url, cache=tmp_path / "cache")
        with pytest.raises(UnknownAdapterError, match=r"not for version=7; its candidates:\n  sentiment/rotten_"
                                                      r"tomatoes@ukp .*versions=1"):
            hub.resolve(f"{ID}:7", hubs=url, cache=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []


def test_a_hub_that_is_down_is_a_clear_error(tmp_path):
    with serve(tmp_path) as (url, _):
        pass  # the port is closed again
    with pytest.raises(DownloadError, match=r"index.json: cannot reach the hub \(.*Connection refused\); check the hub address"):
        hub.resolve(ID, hubs=[hub.Hub(url, retries=1, backoff=0)], cache=tmp_path / "cache")


def test_missing_index_over_http_says_how_to_fix(tmp_path):
    (tmp_path / "hub").mkdir()
    with serve(tmp_path / "hub") as (url, _):
        with pytest.raises(DownloadError, match="has no index.json; run 'adapterctl hub index'"):
            hub.resolve(ID, hubs=url, cache=tmp_path / "cache")


def test_a_card_may_point_at_its_file_by_absolute_url(published, tmp_path):
    """A card may point at its file by absolute URL (a CDN, a release asset)."""
    hub_root, pushed = published
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(_zip_of(hub_root), mirror / "a.zip")
    [card_path] = (hub_root / "adapters").rglob("*.yaml")
    with serve(mirror) as (mirror_url, _), serve(hub_root) as (url, _):
        card = yaml.safe_load(card_path.read_text())
        card["files"][0]["url"] = mirror_url + "a.zip"
        card_path.write_text(yaml.safe_dump(card))
        folder = hub.resolve(ID, hubs=url, cache=tmp_path / "cache")
    model = tiny_model()
    model.load_adapter(str(folder), set_active=True)
    assert torch.equal(logits(model, "rt"), logits(pushed, "rt"))


def test_an_index_from_a_stranger_cannot_point_outside_the_hub_or_mislabel_a_card(published, tmp_path):
    hub_root, _ = published
    text = (hub_root / "index.json").read_text()
    entry = json.loads(text)["adapters"][0]
    (hub_root / "index.json").write_text(text.replace(entry["card"], "../../../etc/passwd.yaml"))
    with serve(hub_root) as (url, _):
        with pytest.raises(CardError, match=r"not a valid hub index \(card paths outside adapters/"):
            hub.resolve(ID, hubs=url, cache=tmp_path / "cache")
    (hub_root / "index.json").write_text(text.replace('"ukp"', '"evil"').replace("@ukp", "@evil"))
    with serve(hub_root) as (url, _):
        with pytest.raises(CardError, match="no longer matches the hub's index entry for sentiment/rotten_tomatoes@evil"):
            hub.resolve("sentiment/rotten_tomatoes@evil", hubs=url, cache=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []


class Endless(HubHandler):
    """Answers the zip with a body that does not end (no Content-Length; HTTP/1.0 sends until
    it closes), here 64 MiB unless the client hangs up first."""

    def do_GET(self):
        if not self.path.endswith(".zip"):
            return super().do_GET()
        self.requests.append((self.path, None))
        self.send_response(200)
        self.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(1024):
                self.wfile.write(b"\0" * 65536)


class Boastful(HubHandler):
    """Announces a terabyte for the zip."""

    def do_GET(self):
        if not self.path.endswith(".zip"):
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Length", str(10**12))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(b"PK")


class Trickle(HubHandler):
    """Sends the zip a byte at a time, 200 bytes a second: never idle long enough for a read
    timeout, but it would take a minute."""

    def do_GET(self):
        if not self.path.endswith(".zip"):
            return super().do_GET()
        data = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                self.requests.append(i)
                time.sleep(0.005)


@pytest.mark.parametrize("handler", [Endless, Boastful])
def test_a_download_stops_at_the_size_the_card_declares(published, tmp_path, handler):
    hub_root, _ = published
    size = _zip_of(hub_root).stat().st_size
    with serve(hub_root, handler) as (url, _):
        with pytest.raises(DownloadError, match=rf"\.zip is larger than the {size} bytes expected \(its card's size"):
            hub.resolve(ID, hubs=[hub.Hub(url, backoff=0)], cache=tmp_path / "cache")
    assert files_in(tmp_path / "cache") == []


def test_a_trickling_server_fails_within_the_deadline(published, tmp_path, monkeypatch):
    hub_root, _ = published
    monkeypatch.setenv("ADAPTERCTL_HUB_DEADLINE", "0.5")
    with serve(hub_root, Trickle) as (url, sent):
        with pytest.raises(DownloadError, match=r"\.zip: not complete after 0.5 s \(\d+ bytes received\); the server "
                                                r"is too slow or stalls.*ADAPTERCTL_HUB_DEADLINE=<seconds>"):
            hub.resolve(ID, hubs=url, cache=tmp_path / "cache")
    assert len([r for r in sent if isinstance(r, int)]) < _zip_of(hub_root).stat().st_size / 2
    assert files_in(tmp_path / "cache") == []
    monkeypatch.setenv("ADAPTERCTL_HUB_DEADLINE", "soon")
    with pytest.raises(DownloadError, match="ADAPTERCTL_HUB_DEADLINE='soon' is not a number of seconds"):
        hub.Hub("http://127.0.0.1:9/")


def test_a_hub_that_is_down_is_skipped_with_a_warning(published, tmp_path, monkeypatch, caplog, capsys):
    """ADAPTERCTL_HUB=<local hub>,<a hub that is down>: the local one serves, at once."""
    hub_root, _ = published
    with serve(tmp_path) as (down, _):
        pass  # the port is closed again
    monkeypatch.setenv("ADAPTERCTL_HUB", f"{hub_root},{down}")
    monkeypatch.setattr(backends.time, "sleep", lambda s: pytest.fail(f"waited {s} s to retry a hub that is down"))
    with caplog.at_level(logging.WARNING):
        folder = hub.resolve(ID, cache=tmp_path / "cache")
        assert (folder / "adapter.safetensors").is_file()
        assert f"skipping hub {down}: {down}index.json: cannot reach the hub" in caplog.text
        with pytest.raises(UnknownAdapterError, match=rf"no adapter nli/rte@ukp .*; not searched, as unreachable: {down}"):
            hub.resolve("nli/rte@ukp", cache=tmp_path / "cache")
        caplog.clear()
        assert main(["hub", "search", "task=sentiment"]) == 0
    assert ID in capsys.readouterr().out and f"skipping hub {down}" in caplog.text
