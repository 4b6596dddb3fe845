"""The Explore page, rendered by headless Chromium from a hub served over HTTP: every indexed
adapter appears, linked to its card, and the task/backbone/architecture filters show exactly the
matching rows, whether set in the URL or picked by the user."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import time
import urllib.request
from html.parser import HTMLParser

import pytest
from hub_support import make_run, serve

from adapterctl.hub import index
from adapterctl.hub.card import parse_card
from adapterctl.hub.explore import render
from adapterctl.hub.publish import publish
from adapterctl.hub.export import export_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does it)")

RUNS = [("rt_bert", "pfeiffer", "bert", "rotten_tomatoes"), ("rt_roberta", "pfeiffer", "roberta", "rotten_tomatoes"),
        ("rt_houlsby", "houlsby", "bert", "rotten_tomatoes"), ("rte_bert", "pfeiffer", "bert", "rte"),
        ("conll", "houlsby", "roberta", "conll2003")]


class _Rows(HTMLParser):
    """The adapter ids of the static table's rows, with the card each links to."""

    def __init__(self, html: str):
        super().__init__()
        self.rows: list[tuple[str, str]] = []
        self._id = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-id" in attrs:
            self._id = attrs["data-id"]
        elif tag == "a" and self._id:
            self.rows.append((self._id, attrs["href"]))
            self._id = None


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("explore")
    for name, preset, family, task in RUNS:
        run, _ = make_run(base / "runs" / name, name=name, preset=preset, family=family, task=task)
        publish(export_run(run, base / "exports" / name, org="ukp"), base / "hub")
    return base / "hub"


def _above_4(fd: int) -> int:
    """``fd`` moved to 10 or above, so that copying it to 3 and 4 in the child clobbers nothing."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (its fds 3 and 4), with
    the standard library only: no webdriver to match to the browser's version."""

    def __init__(self, profile):
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        cmd_r, res_w = _above_4(cmd_r), _above_4(res_w)
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$@" 3<&{cmd_r} 4>&{res_w}', "bash", *args],
                                     pass_fds=(cmd_r, res_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        self._buffer, self._id, self._session = b"", 0, None

    def send(self, method: str, **params):
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._res_r, 1 << 16)
                assert chunk, "chromium closed the DevTools pipe"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply["error"]
                return reply["result"]

    def open(self, url: str) -> None:
        self._session = None
        target = self.send("Target.createTarget", url=url)["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        deadline = time.monotonic() + 30
        while not self.js(f"location.href === {json.dumps(url)} && document.readyState === 'complete'"):
            assert time.monotonic() < deadline, f"{url} did not load"
            time.sleep(0.05)

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def shown(self) -> list[str]:
        return sorted(self.js("[...document.querySelectorAll('#adapters tbody tr')].filter(r => !r.hidden)"
                              ".map(r => `${r.dataset.id} ${r.dataset.backbone} ${r.dataset.architecture}`)"))

    def close(self):
        self.proc.terminate()
        self.proc.wait(30)
        os.close(self._cmd_w)
        os.close(self._res_r)


@pytest.fixture
def browser(tmp_path):
    chromium = Chromium(tmp_path / "profile")
    yield chromium
    chromium.close()


def test_page_is_complete_without_a_browser(hub_root):
    """The rows are static HTML (the script only hides some), and card text is escaped."""
    entries = index.scan(hub_root)
    rows = _Rows((hub_root / "explore.html").read_text()).rows
    assert sorted(rows) == sorted((e.id, e.card) for e in entries) and len(rows) == len(RUNS)
    evil = dataclasses.replace(entries[0], description="<script>x()</script>")
    assert "<script>x()</script>" not in render([evil]) and "&lt;script&gt;x()&lt;/script&gt;" in render([evil])


@needs_chromium
def test_explore_page_in_chromium_lists_and_filters_from_the_url(hub_root, browser):
    expected_all = sorted(f"{e.id} {e.model_type} {e.architecture}" for e in index.scan(hub_root))
    with serve(hub_root) as (url, _):
        browser.open(url + "explore.html")
        assert browser.shown() == expected_all
        assert browser.js("document.getElementById('count').textContent") == "5 of 5 adapters"
        for href in browser.js("[...document.querySelectorAll('#adapters tbody a')].map(a => a.href)"):
            with urllib.request.urlopen(href) as response:  # each row links to its card, served beside the page
                assert parse_card(response.read().decode(), href)["org"] == "ukp"

        browser.open(url + "explore.html?task=sentiment")
        assert browser.shown() == ["sentiment/rotten_tomatoes@ukp bert houlsby",
                                   "sentiment/rotten_tomatoes@ukp bert pfeiffer",
                                   "sentiment/rotten_tomatoes@ukp roberta pfeiffer"]
        assert browser.js("document.getElementById('count').textContent") == "3 of 5 adapters"

        browser.open(url + "explore.html?task=sentiment&backbone=bert&architecture=pfeiffer")
        assert browser.shown() == ["sentiment/rotten_tomatoes@ukp bert pfeiffer"]

        browser.open(url + "explore.html?backbone=t5")  # a value no adapter has: nothing shown
        assert browser.shown() == []
        assert browser.js("document.getElementById('count').textContent") == "0 of 5 adapters"


@needs_chromium
def test_explore_page_filters_when_the_user_picks_a_value(hub_root, browser):
    with serve(hub_root) as (url, _):
        browser.open(url + "explore.html")
        pick = ("(() => {{ const s = document.querySelector('select[name={}]'); s.value = '{}';"
                " s.dispatchEvent(new Event('change', {{bubbles: true}})); }})()")
        browser.js(pick.format("architecture", "houlsby"))
        assert browser.shown() == ["ner/conll2003@ukp roberta houlsby", "sentiment/rotten_tomatoes@ukp bert houlsby"]
        browser.js(pick.format("backbone", "roberta"))
        assert browser.shown() == ["ner/conll2003@ukp roberta houlsby"]
        assert browser.js("location.search") == "?backbone=roberta&architecture=houlsby"  # a linkable view
        browser.js(pick.format("architecture", ""))
        browser.js(pick.format("backbone", ""))
        assert len(browser.shown()) == 5 and browser.js("location.search") == ""
