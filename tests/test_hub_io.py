"""adapterctl.io, which every writer uses: files get the permissions the umask gives (a hub served
by nginx or shared with a group stays readable), an overwrite killed between its two renames is
undone by the next save or load, and names read from files cannot point outside their folder."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import stat

import pytest
import torch
from conftest import tiny_model
from hub_support import logits, make_run

from adapterctl.errors import CorruptFileError
from adapterctl.hub import Cache, resolve
from adapterctl.hub.export import export_run
from adapterctl.hub.publish import publish
from adapterctl.io import atomic_dir, child, recover

FORK = multiprocessing.get_context("fork")


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(folder) -> dict[str, str]:
    """Every file and folder under ``folder`` (and itself), by kind, to its permission bits."""
    paths = [folder, *folder.rglob("*")]
    return {f"{'dir' if p.is_dir() else 'file'} {p.relative_to(folder)}": oct(stat.S_IMODE(p.stat().st_mode))
            for p in paths}


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, "0o644", "0o755"), (0o027, "0o640", "0o750")])
def test_hub_export_and_cache_files_get_the_umask_permissions(tmp_path, mask, file_mode, dir_mode):
    run, _ = make_run(tmp_path / "run")
    with umask(mask):
        export = export_run(run, tmp_path / "export", org="ukp")
        publish(export, tmp_path / "hub")
        folder = resolve("sentiment/rotten_tomatoes@ukp", hubs=str(tmp_path / "hub"), cache=Cache(tmp_path / "cache"))
    for root in (export, tmp_path / "hub", folder):
        modes = _modes(root)
        wrong = {k: v for k, v in modes.items() if v != (dir_mode if k.startswith("dir") else file_mode)}
        assert wrong == {}, f"under umask {oct(mask)}"
    assert {"file index.json", "file explore.html", "dir adapters/ukp"} <= set(_modes(tmp_path / "hub"))


def _write(target, text, overwrite=False):
    with atomic_dir(target, overwrite=overwrite) as tmp:
        (tmp / "weights").write_text(text)


def _killed_overwrite(target):
    """Overwrite ``target``, dying between the two renames as ``kill -9`` would."""
    rename = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old version is out of the way, the new one not yet in place
            os._exit(9)
        rename(src, dst)

    os.replace = replace
    _write(target, "new", overwrite=True)


def _interrupted(tmp_path):
    target = tmp_path / "checkpoints" / "last"
    _write(target, "old")
    killed = FORK.Process(target=_killed_overwrite, args=(target,))
    killed.start()
    killed.join()
    assert killed.exitcode == 9 and not target.exists()
    [backup] = [p.name for p in target.parent.iterdir() if ".old-" in p.name]
    assert backup.startswith(".last.old-")
    return target


def test_an_overwrite_killed_between_its_renames_is_restored_on_load(tmp_path):
    target = _interrupted(tmp_path)
    assert recover(target) == target  # what a loader calls before reading
    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir() if ".old-" in p.name) == []


def test_an_overwrite_killed_between_its_renames_is_restored_by_the_next_save(tmp_path):
    target = _interrupted(tmp_path)
    with pytest.raises(FileExistsError, match="already exists"):
        _write(target, "newer")  # the restored version is not silently replaced
    assert (target / "weights").read_text() == "old"
    _write(target, "newer", overwrite=True)
    assert (target / "weights").read_text() == "newer"
    left = sorted(p.name for p in target.parent.iterdir())  # the dead writer's hidden temporary folder stays
    assert left[-1] == "last" and [n for n in left[:-1] if not n.startswith(".last.tmp-")] == []


def test_loading_an_adapter_whose_overwrite_was_killed_loads_the_previous_version(tmp_path):
    _, model = make_run(tmp_path / "run")
    target = tmp_path / "run" / "adapters" / "rt"
    killed = FORK.Process(target=_killed_overwrite, args=(target,))
    killed.start()
    killed.join()
    assert killed.exitcode == 9 and not target.exists()
    loaded = tiny_model()
    assert loaded.load_adapter(str(target), set_active=True) == "rt"
    assert torch.equal(logits(loaded, "rt"), logits(model, "rt"))


def test_several_leftover_versions_are_named_not_guessed(tmp_path):
    target = tmp_path / "adapter"
    for name in (".adapter.old-1", ".adapter.old-2"):
        (tmp_path / name).mkdir()
    message = (r"adapter is missing; interrupted writes left 2 earlier versions beside it \(.adapter.old-1, "
               r".adapter.old-2\): rename the one to keep to adapter")
    with pytest.raises(CorruptFileError, match=message):
        recover(target)
    with pytest.raises(CorruptFileError, match=message):
        _write(target, "new")  # nor does the next save guess
    (tmp_path / ".adapter.old-2" / "weights").write_text("kept")
    (tmp_path / ".adapter.old-2").rename(target)
    assert recover(target) == target and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


@pytest.mark.parametrize("name", ["../outside", "/etc", "a/b", "..", ".", "", "a\\b", "C:x", "new\nline"])
def test_a_name_read_from_a_file_stays_inside_its_folder(tmp_path, name):
    with pytest.raises(CorruptFileError, match=r"in .* is not a plain file or folder name; refused"):
        child(tmp_path, name, "adapter_setup.json child")


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "setup").mkdir()
    (tmp_path / "setup" / "escape").symlink_to(tmp_path)
    with pytest.raises(CorruptFileError, match="'escape' in .* resolves outside it"):
        child(tmp_path / "setup", "escape")
    assert child(tmp_path / "setup", "sst2,rte") == tmp_path / "setup" / "sst2,rte"  # a fusion's folder
