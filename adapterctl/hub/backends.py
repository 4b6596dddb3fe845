"""Where hub files come from: a local folder, any static HTTP server, or the HF Hub.

A hub backend reads small files whole (the index, cards) and streams large ones into an open
file, never more than ``limit`` bytes (a card's declared size): an endless body is cut off at
once. The HTTP backend survives dropped connections: it retries with backoff and asks for the
remaining bytes with a ``Range`` header, starting over only if the server ignores it, all
within an overall deadline per file, so a server that trickles a byte a second fails in bounded
time too. A host that cannot be reached at all is not retried. Verification is not a
backend's job; the cache checks size and sha256 of whatever arrives.
"""

from __future__ import annotations

import http.client
import io
import os
import posixpath
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

import yaml

from .. import __version__
from ..errors import CorruptFileError
from .cache import file_digest, verify_file
from .card import card_id, is_model_id
from .errors import DownloadError
from .pack import ADAPTER_FILES, Limits

CHUNK = 1 << 16
_USER_AGENT = f"adapterctl/{__version__}"
MIN_RATE = 100_000  # bytes/s: the slowest average a download's default deadline allows
GRACE = 60.0  # seconds every file gets on top of its size / MIN_RATE
COMMIT = re.compile(r"[0-9a-f]{40}")


class _NotFound(DownloadError):
    """HTTP 404: for a hub's optional files (the index) an answer, not a failure."""


def is_url(location: str) -> bool:
    return urllib.parse.urlsplit(str(location)).scheme in ("http", "https")


def join(base: str, relative: str) -> str:
    """``relative`` (a card's file url) against the folder of ``base`` (the card), inside the hub."""
    path = posixpath.normpath(posixpath.join(posixpath.dirname(base), relative))
    if path.startswith("../") or path == ".." or path.startswith("/"):
        raise DownloadError(f"{relative!r} in {base} points outside the hub; refused")
    return path


def _too_large(source: str, limit: int) -> DownloadError:
    return DownloadError(f"{source} is larger than the {limit} bytes expected (its card's size, or the most a hub "
                         "file may be); refused, nothing kept. Ask the hub's maintainer to check the file")


class LocalBackend:
    """A hub folder on this machine (or a mounted share)."""

    def __init__(self, root):
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, relative: str) -> Path:
        return self.root.joinpath(*relative.split("/"))

    def read_bytes(self, relative: str, limit: int) -> bytes | None:
        path = self._path(relative)
        if not path.is_file():
            return None
        with path.open("rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise _too_large(str(path), limit)
        return data

    def fetch(self, relative: str, out: BinaryIO, limit: int, size: int | None = None, progress=None) -> None:
        path = self._path(relative)
        if not path.is_file():
            raise DownloadError(f"{path} is missing from the hub; run 'adapterctl hub index' there or re-push the adapter")
        with path.open("rb") as src:
            while chunk := src.read(CHUNK):
                if out.tell() + len(chunk) > limit:
                    raise _too_large(str(path), limit)
                out.write(chunk)
                if progress is not None:
                    progress.update(len(chunk))


class HttpBackend:
    """A hub served by a static HTTP server (``python -m http.server``, nginx, GitHub Pages, ...).

    ``timeout`` bounds each connect and read; ``deadline`` (seconds, default
    ``$ADAPTERCTL_HUB_DEADLINE``, else 60 s plus a second per 100 kB the file is expected to
    hold) bounds one file's whole download, retries included.
    """

    def __init__(self, base_url: str, retries: int = 5, backoff: float = 0.5, timeout: float = 10.0,
                 deadline: float | None = None):
        self.location = base_url if base_url.endswith("/") else base_url + "/"
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        if deadline is None and os.environ.get("ADAPTERCTL_HUB_DEADLINE"):
            try:
                deadline = float(os.environ["ADAPTERCTL_HUB_DEADLINE"])
            except ValueError:
                raise DownloadError(f"ADAPTERCTL_HUB_DEADLINE={os.environ['ADAPTERCTL_HUB_DEADLINE']!r} is not a "
                                    "number of seconds; fix or unset it") from None
        self.deadline = deadline

    def url(self, relative: str) -> str:
        return urllib.parse.urljoin(self.location, relative)

    def _open(self, url: str, headers: dict | None, timeout: float):
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **(headers or {})})
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s) only, see is_url

    def read_bytes(self, relative: str, limit: int) -> bytes | None:
        buffer = io.BytesIO()
        try:
            self.fetch(relative, buffer, limit, size=0)
        except _NotFound:
            return None
        return buffer.getvalue()

    def fetch(self, relative: str, out: BinaryIO, limit: int, size: int | None = None, progress=None) -> None:
        """Stream ``relative`` into ``out``, at most ``limit`` bytes; on a dropped connection resume
        where it stopped. ``size``: what the file should hold (sets the default deadline);
        ``progress``: a tqdm bar to update."""
        url, failures = self.url(relative), 0
        seconds = self.deadline if self.deadline is not None else GRACE + (limit if size is None else size) / MIN_RATE
        give_up = time.monotonic() + seconds

        def late() -> DownloadError:
            return DownloadError(f"{url}: not complete after {round(seconds, 1):g} s ({out.tell()} bytes received); the "
                                 "server is too slow or stalls. Try again later, or allow longer with "
                                 "ADAPTERCTL_HUB_DEADLINE=<seconds>")

        while True:
            written = out.tell()
            try:
                remaining = give_up - time.monotonic()
                if remaining <= 0:
                    raise late()
                headers = {"Range": f"bytes={written}-"} if written else None
                with self._open(url, headers, min(self.timeout, remaining)) as response:
                    if written and response.status != 206:  # Range ignored: start over
                        out.seek(0)
                        out.truncate()
                        if progress is not None:
                            progress.reset()
                    expected = response.length  # the Content-Length, None if absent or not a number
                    if expected is not None and out.tell() + expected > limit:
                        raise _too_large(url, limit)
                    received = 0
                    while chunk := response.read1(CHUNK):  # one read each, so a trickle meets the deadline
                        if out.tell() + len(chunk) > limit:
                            raise _too_large(url, limit)
                        out.write(chunk)
                        received += len(chunk)
                        if progress is not None:
                            progress.update(len(chunk))
                        if time.monotonic() > give_up:
                            raise late()
                    if expected is None or received >= expected:
                        return
                    raise http.client.IncompleteRead(b"", expected - received)
            except DownloadError:
                raise
            except urllib.error.HTTPError as e:
                if e.code == 416 and written:  # nothing beyond what we have: the size check decides
                    return
                if e.code < 500 and e.code not in (408, 429):
                    raise (_NotFound if e.code == 404 else DownloadError)(f"{url}: HTTP {e.code} {e.reason}") from None
                error = e
            except urllib.error.URLError as e:  # no connection at all: the host is down or unknown
                if not out.tell():
                    raise DownloadError(f"{url}: cannot reach the hub ({e.reason}); check the hub address and your "
                                        "connection, or drop it from ADAPTERCTL_HUB") from None
                error = e
            except (OSError, http.client.HTTPException) as e:
                error = e
            failures += 1
            wait = self.backoff * 2 ** (failures - 1)
            if failures > self.retries or time.monotonic() + wait > give_up:
                raise DownloadError(
                    f"{url}: failed after {failures} tries ({out.tell()} bytes received; last error: {error!r}); "
                    "check the hub address and your connection, then try again"
                )
            time.sleep(wait)


def backend_for(location: str, **http):
    return HttpBackend(location, **http) if is_url(location) else LocalBackend(Path(location).expanduser())


class HfHubBackend:
    """Adapter repos on the HF Hub (AdapterHub's own layout: the adapter files at the top).

    ``api`` is an ``huggingface_hub.HfApi``; tests pass a stand-in, so everything but the
    network itself is exercised offline.
    """

    def __init__(self, api=None, token=None):
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        self.api = api

    def push(self, adapter_folder: Path, card: dict, repo_id: str, private: bool = False) -> str:
        """Upload the adapter files and a model card built from ``card``; returns the commit URL."""
        adapter_folder = Path(adapter_folder)
        with tempfile.TemporaryDirectory(prefix="adapterctl-hf-") as tmp:
            staging = Path(tmp)
            for path in sorted(adapter_folder.iterdir()):
                if path.name in ADAPTER_FILES and path.is_file() and not path.is_symlink():
                    shutil.copy2(path, staging / path.name)
            (staging / "README.md").write_text(model_card(card, repo_id), encoding="utf-8")
            self.api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            commit = self.api.upload_folder(repo_id=repo_id, folder_path=staging, repo_type="model",
                                            commit_message=f"adapterctl: {card_id(card)} version {card['default_version']}")
        return getattr(commit, "commit_url", str(commit))

    def pull_into(self, repo_id: str, revision: str | None, folder: Path) -> str:
        """Download the repo's adapter files (``ADAPTER_FILES`` at its top level) into ``folder``,
        each checked against the Hub's size and hash (sha256 for LFS files, the git blob sha1
        otherwise); returns the commit."""
        try:
            info = self.api.model_info(repo_id, revision=revision, files_metadata=True)
        except Exception as e:  # noqa: BLE001 - offline, unknown repo, auth: all mean "cannot reach it"
            raise DownloadError(f"hf:{repo_id}: cannot read the repo from the HF Hub ({type(e).__name__}: {e})") from None
        if not COMMIT.fullmatch(str(info.sha)):
            raise DownloadError(f"hf:{repo_id}: the HF Hub answered commit {info.sha!r}, not a git commit hash; refused")
        wanted = [s for s in info.siblings if s.rfilename in ADAPTER_FILES]
        total, budget = sum(s.size or 0 for s in wanted), Limits.from_env().max_bytes
        if total > budget:
            raise DownloadError(f"hf:{repo_id}: its adapter files hold {total} bytes, more than the {budget} an adapter "
                                "may (ADAPTERCTL_MAX_UNPACKED); refused, nothing downloaded")
        for sibling in wanted:
            name = sibling.rfilename
            path = Path(self.api.hf_hub_download(repo_id, name, revision=info.sha, local_dir=folder))
            source = f"hf:{repo_id}@{info.sha}/{name}"
            if sibling.lfs is not None:
                verify_file(path, sibling.lfs.sha256, sibling.lfs.size, source)
            elif sibling.blob_id and file_digest(path, "sha1", b"blob %d\0" % path.stat().st_size) != sibling.blob_id:
                raise CorruptFileError(f"{source}: content does not match the Hub's git hash; nothing was kept")
        shutil.rmtree(folder / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping
        return info.sha


def model_card(card: dict, repo_id: str) -> str:
    """The HF model card (README.md): metadata the HF Hub indexes, then how to use the adapter."""
    backbone = card["backbone"]
    meta = {
        "library_name": "adapterctl",
        "tags": ["adapterctl", "adapters", "adapter-transformers", backbone["model_type"], card["task"]],
        "license": card["license"],
    }
    if card.get("dataset"):
        meta["datasets"] = [card["dataset"]]
    if is_model_id(backbone["model_name"]):
        meta["base_model"] = backbone["model_name"]
    metrics = "".join(f"| {k} | {v:.4f} |\n" for k, v in (card.get("metrics") or {}).items())
    return "".join([
        "---\n", yaml.safe_dump(meta, sort_keys=False), "---\n\n",
        f"# {card_id(card)}: a {card['architecture']['name']} adapter for {backbone['model_name'] or backbone['model_type']}\n\n",
        f"{card['description']}\n\n",
        "## Usage\n\n```python\nfrom adapterctl import AdapterModel\n\n",
        f"model = AdapterModel.from_pretrained({backbone['model_name'] or '<backbone>'!r})\n",
        f"model.load_adapter(\"hf:{repo_id}\", set_active=True)\n```\n\n",
        f"Architecture: `{card['architecture']['name']}` (config hash `{card['architecture']['config_hash']}`), "
        f"hidden size {backbone['hidden_size']}.\n\n",
        f"## Metrics\n\n| metric | value |\n|---|---|\n{metrics}\n" if metrics else "",
        f"## Citation\n\n```\n{card['citation']}\n```\n" if card.get("citation") else "",
    ])
