"""The node's model cache: which URIs it keeps, how entries appear, and what pruning removes.

The download is a plain function writing files, as MLflow's would: what is under test is the
cache's own handling of the filesystem.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from mlray.serving import model_cache
from mlray.serving.model_cache import entry_key, fetch, prune

TRACKING = "http://mlflow:5000"
URI = "models:/iris/3"
RUN = "0123abcd"


class Downloads:
    """Writes a model directory as MLflow's download_artifacts does, and counts the calls."""

    def __init__(self, fail: Exception | None = None, gate: threading.Event | None = None):
        self.calls: list[str] = []
        self.fail, self.gate = fail, gate

    def __call__(self, uri: str, into: str) -> str:
        self.calls.append(uri)
        model = Path(into) / "model"
        model.mkdir()
        (model / "requirements.txt").write_text("xgboost==2.1.4\n")
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        (model / "MLmodel").write_text(f"uri: {uri}\n")
        return str(model)


def test_only_a_version_of_one_run_has_an_entry():
    assert entry_key(TRACKING, URI, RUN)
    assert entry_key(TRACKING, "models:/iris@champion", RUN) is None  # an alias moves
    assert entry_key(TRACKING, "models:/iris/latest", RUN) is None
    assert entry_key(TRACKING, "s3://bucket/model", RUN) is None
    assert entry_key(TRACKING, URI, None) is None  # re-registered: version 1 again
    keys = {entry_key(TRACKING, URI, RUN), entry_key(TRACKING, URI, "other-run"),
            entry_key("http://other:5000", URI, RUN), entry_key(TRACKING, "models:/iris/4", RUN)}  # fmt: skip
    assert len(keys) == 4


def test_the_second_fetch_on_a_node_reads_the_copy_without_downloading(tmp_path):
    root = str(tmp_path / "cache")
    download = Downloads()
    first = fetch(URI, RUN, TRACKING, download, root)
    second = fetch(URI, RUN, TRACKING, download, root)
    assert (first.source, first.cached, second.source, second.cached) == (
        "mlflow", True, "node cache", True,
    )  # fmt: skip
    assert download.calls == [URI]
    assert first.path == second.path and Path(second.path, "MLmodel").read_text() == f"uri: {URI}\n"
    assert first.private_dir is None and second.private_dir is None
    assert os.stat(root).st_mode & 0o777 == 0o700
    assert not [p for p in os.listdir(root) if p.startswith(".")]  # no partial left


def test_a_failed_download_leaves_nothing_that_a_later_fetch_would_trust(tmp_path):
    root = str(tmp_path / "cache")
    with pytest.raises(ConnectionError):
        fetch(URI, RUN, TRACKING, Downloads(fail=ConnectionError("MLflow is down")), root)
    assert os.listdir(root) == []
    again = Downloads()
    assert fetch(URI, RUN, TRACKING, again, root).source == "mlflow" and again.calls == [URI]


def test_a_broken_entry_is_replaced_not_loaded(tmp_path):
    root = tmp_path / "cache"
    first = fetch(URI, RUN, TRACKING, Downloads(), str(root))
    Path(first.path, "MLmodel").unlink()  # e.g. a cleaner removed files under it
    download = Downloads()
    again = fetch(URI, RUN, TRACKING, download, str(root))
    assert again.source == "mlflow" and download.calls == [URI]
    assert Path(again.path, "MLmodel").exists()


def test_two_replicas_starting_together_both_load_a_whole_copy(tmp_path):
    root = str(tmp_path / "cache")
    gate = threading.Event()
    results = []

    def start():
        results.append(fetch(URI, RUN, TRACKING, Downloads(gate=gate), root))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # both are mid-download
    gate.set()
    for t in threads:
        t.join(10)
    assert len(results) == 2 and all(Path(r.path, "MLmodel").exists() for r in results)
    assert {r.path for r in results} == {results[0].path}
    assert [p for p in os.listdir(root) if not p.startswith(".")] == [entry_key(TRACKING, URI, RUN)]
    assert not [p for p in os.listdir(root) if p.startswith(".")]


def test_unpinned_uris_and_a_disabled_cache_download_privately(tmp_path, monkeypatch):
    root = str(tmp_path / "cache")
    got = fetch("models:/iris@champion", RUN, TRACKING, Downloads(), root)
    assert (got.source, got.cached) == ("mlflow", False) and got.private_dir
    assert "not pinned" in got.note and not os.path.exists(root)
    assert Path(got.path).is_relative_to(got.private_dir)
    shutil.rmtree(got.private_dir)
    monkeypatch.setenv(model_cache.DIR_ENV, "off")
    assert model_cache.cache_root() is None
    off = fetch(URI, RUN, TRACKING, Downloads(), model_cache.cache_root())
    assert not off.cached and off.note == "the model cache is off"
    shutil.rmtree(off.private_dir)
    monkeypatch.delenv(model_cache.DIR_ENV)
    assert model_cache.cache_root() == model_cache.DEFAULT_DIR


def test_a_directory_others_can_write_is_not_trusted(tmp_path):
    """A model file is code for its loader: another user must not be able to plant one."""
    root = tmp_path / "cache"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    got = fetch(URI, RUN, TRACKING, Downloads(), str(root))
    assert not got.cached and "writable by other users (mode 777)" in got.note
    assert os.listdir(root) == []
    shutil.rmtree(got.private_dir)


def test_prune_removes_what_no_app_needs_once_unused_and_dead_partials(tmp_path):
    root = tmp_path / "cache"
    wanted = fetch(URI, RUN, TRACKING, Downloads(), str(root))
    old = fetch("models:/iris/2", RUN, TRACKING, Downloads(), str(root))
    recent = fetch("models:/iris/1", RUN, TRACKING, Downloads(), str(root))
    keep = [entry_key(TRACKING, URI, RUN)]
    now = time.time()
    hour_ago = now - model_cache.UNUSED_KEEP_S - 60
    for fetched in (wanted, old):
        os.utime(Path(fetched.path).parent, (hour_ago, hour_ago))
    partial = root / f"{model_cache.PARTIAL_PREFIX}dead"
    partial.mkdir()
    os.utime(partial, (hour_ago, hour_ago))
    fresh_partial = root / f"{model_cache.PARTIAL_PREFIX}live"
    fresh_partial.mkdir()

    removed = prune(str(root), keep, now=now)

    assert removed == sorted([partial.name, entry_key(TRACKING, "models:/iris/2", RUN)])
    assert Path(wanted.path).exists() and Path(recent.path).exists()  # wanted; used lately
    assert not Path(old.path).exists() and fresh_partial.exists()


def test_loading_from_the_copy_marks_it_used(tmp_path):
    root = tmp_path / "cache"
    first = fetch(URI, RUN, TRACKING, Downloads(), str(root))
    entry = Path(first.path).parent
    long_ago = time.time() - 10 * model_cache.UNUSED_KEEP_S
    os.utime(entry, (long_ago, long_ago))
    fetch(URI, RUN, TRACKING, Downloads(), str(root))
    assert prune(str(root), keep=[]) == []  # a replica just started from it


def test_a_slower_download_leaves_the_copy_another_process_finished_first(tmp_path):
    """The loser of the race must not move the winner's entry away under its reader."""
    root = str(tmp_path / "cache")
    first = {}

    def slow(uri: str, into: str) -> str:
        first["got"] = fetch(URI, RUN, TRACKING, Downloads(), root)  # the other process
        Path(first["got"].path, "reader-was-here").write_text("")
        return Downloads()(uri, into)

    second = fetch(URI, RUN, TRACKING, slow, root)
    assert second.path == first["got"].path
    assert Path(second.path, "reader-was-here").exists()  # the same directory, not replaced
    assert not [p for p in os.listdir(root) if p.startswith(".")]


def test_a_download_that_cannot_be_put_in_place_is_still_loaded(tmp_path, monkeypatch):
    """A broken entry that cannot be set aside costs the cache, not the replica's start."""
    root = tmp_path / "cache"
    broken = root / entry_key(TRACKING, URI, RUN)
    broken.mkdir(parents=True)
    (broken / "leftover").write_text("no MLmodel, no entry file")
    os.chmod(root, 0o700)
    monkeypatch.setattr(model_cache, "_retire", lambda path: False)  # e.g. EBUSY, EPERM
    got = fetch(URI, RUN, TRACKING, Downloads(), str(root))
    assert not got.cached and got.private_dir and "could not put the download" in got.note
    assert Path(got.path, "MLmodel").exists() and (broken / "leftover").exists()
    assert not Path(got.path).is_relative_to(root)  # pruning would remove it under the replica
    shutil.rmtree(got.private_dir)
