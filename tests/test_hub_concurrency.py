"""A hub folder is shared: pushes at the same moment each get their own version and the index
lists them all, a push killed between its steps is finished by the next try, and N processes
pushing and pulling in loops leave a hub whose every card, zip and index entry agree.

Writers are forked processes (they start at once, with the imports already done); a kill is
``os._exit`` at a chosen step, which, like ``kill -9``, runs no cleanup.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import random
import threading
from pathlib import Path

import pytest
from conftest import REPO

from adapterctl.errors import FolderBusyError
from adapterctl.hub import index
from adapterctl.hub.card import architecture, read_card
from adapterctl.hub.publish import publish
from adapterctl.io import locked

_spec = importlib.util.spec_from_file_location("hub_stress", REPO / "bench" / "hub_stress.py")
stress = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stress)
FORK = multiprocessing.get_context("fork")
architecture("pfeiffer")  # what validating a card loads, loaded before any fork


def _exports(folder, subtasks):
    return [stress.make_export(folder / f"export{i}", s, random.Random(i)) for i, s in enumerate(subtasks)]


def _pushed(export, done) -> dict:
    return {"card": str(done.card), "version": done.version, "sha256": read_card(export / "card.yaml")["files"][0]["sha256"]}


def _push_at(start, export, hub, results):
    start.wait()
    try:
        done = publish(export, hub)
        results.put((str(export), done.version, done.new, str(done.card)))
    except Exception as e:  # noqa: BLE001 - the parent asserts there is none
        results.put((str(export), repr(e), None, None))


@pytest.mark.parametrize("attempt", range(3))
def test_pushes_at_the_same_moment_each_get_their_version_and_all_are_indexed(tmp_path, attempt):
    """Three pushes of one id (other weights each) and three of other ids, released together."""
    exports = _exports(tmp_path, ["shared"] * 3 + ["one", "two", "three"])
    hub = tmp_path / "hub"
    start, results = FORK.Event(), FORK.Queue()
    procs = [FORK.Process(target=_push_at, args=(start, e, hub, results)) for e in exports]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    assert [o for o in outcomes if o[2] is not True] == []  # every push published, none refused
    pushed = [{"card": card, "version": version, "sha256": read_card(Path(export) / "card.yaml")["files"][0]["sha256"]}
              for export, version, _, card in outcomes]
    assert stress.lost(hub, pushed) == []
    shared = [o[1] for o in outcomes if "shared" in o[3]]
    assert sorted(shared) == ["1", "2", "3"]
    assert index.check(hub) == []
    assert sorted(e.subtask for e in index.loads((hub / index.INDEX).read_text(), "index")) == [
        "one", "shared", "three", "two"]


def _killed_push(export, hub, step):
    """Push ``export``, dying at ``step`` as ``kill -9`` would."""
    import adapterctl.hub.publish as publishing

    die = lambda *args, **kwargs: os._exit(9)  # noqa: E731
    if step == "while copying the zip":
        publishing.shutil.copyfileobj = lambda src, out, size: (out.write(src.read(100)), out.flush(), die())
    elif step == "before writing the card":
        publishing.atomic_write_text = die
    else:  # before indexing
        index.build = die
    publish(export, hub)


@pytest.mark.parametrize("step", ["while copying the zip", "before writing the card", "before indexing"])
def test_a_push_killed_between_its_steps_is_finished_by_the_next_try(tmp_path, step):
    hub = tmp_path / "hub"
    first, export = _exports(tmp_path, ["earlier", "rt"])
    publish(first, hub)
    killed = FORK.Process(target=_killed_push, args=(export, hub, step))
    killed.start()
    killed.join()
    assert killed.exitcode == 9
    zips = lambda: sorted(p.name for p in (hub / "adapters").rglob("*.zip"))  # noqa: E731
    if step == "before writing the card":
        assert len(zips()) == 2 and index.check(hub) == []  # an orphan zip no card lists yet
    if step == "before indexing":
        assert index.check(hub) == [f"{hub / index.INDEX} does not list exactly the cards; "
                                    f"run 'adapterctl hub index --hub {hub}'"]
    done = publish(export, hub)  # the retry; the dead push's lock went with it
    assert done.version == "1" and done.new is (step != "before indexing")
    assert stress.lost(hub, [_pushed(export, done)]) == []
    assert index.check(hub) == [] and len(zips()) == 2
    assert len(index.loads((hub / index.INDEX).read_text(), "index")) == 2


def test_a_push_waits_for_the_lock_and_says_who_holds_it(tmp_path):
    hub = tmp_path / "hub"
    errors = []

    def other_writer():
        try:
            with locked(hub / index.LOCK, timeout=0.2):
                pass
        except FolderBusyError as e:
            errors.append(str(e))

    with index.lock(hub):
        thread = threading.Thread(target=other_writer)
        thread.start()
        thread.join()
    assert errors == [f"{hub / index.LOCK} is still locked after 0.2 s by another adapterctl process writing there; "
                      "try again when it has finished"]
    with locked(hub / index.LOCK, timeout=0.2):  # released: free again
        pass


def test_processes_pushing_and_pulling_in_loops_leave_a_consistent_hub(tmp_path):
    """bench/hub_stress.py, small: 4 processes x 4 rounds of two pushes and a verified pull."""
    result = stress.stress(tmp_path / "hub", processes=4, rounds=4)
    assert result["problems"] == [] and result["push_errors"] == [] and result["pull_errors"] == []
    assert result["pushes_ok"] == result["versions"] == 4 * 4 * 2
    assert result["cards"] == 5 and result["pulls_ok"] == 4 * 4
