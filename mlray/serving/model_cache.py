"""A node-local copy of each model version, kept for the replicas that start there later.

A replica loads its model in its constructor. Without a copy on its node, every replica
start (a scale-out, a replacement) downloads the model from MLflow again, and while MLflow
is down no new replica can start at all. `mlray deploy` fetches each added or updated model
into this cache on every alive node (mlray/node_envs.py), next to building its environment;
a replica loads from there, and fills the cache itself on a miss (a node that joined after
the deploy), so the next replica on that node does not ask MLflow.

Only URIs whose content cannot change have an entry: ``models:/<name>/<version>`` of one
source run. The key holds the tracking URI, the URI and the run id, because a model deleted
and registered again starts at version 1 again, from another run. An entry appears by one
rename of a complete download, so no reader sees half of one. The directory must be this
user's and writable by nobody else: a model file is code for its loader (pickles).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

DIR_ENV = "MLRAY_MODEL_CACHE_DIR"  # unset: DEFAULT_DIR; "off": no cache
DISABLED = ("off", "none", "false", "0", "")
DEFAULT_DIR = os.path.join(tempfile.gettempdir(), "mlray-models")
ENTRY_META = "mlray-entry.json"
PARTIAL_PREFIX = ".partial-"
STALE_PREFIX = ".stale-"
# Entries no app of the cluster names any more are removed once unused this long: a rollback
# within the hour loads from disk, and a replica of the old version still starting has time.
UNUSED_KEEP_S = 3600.0
# A download that never finished (its process died) is removed after this long.
PARTIAL_KEEP_S = 3600.0
_PINNED = re.compile(r"^models:/[^/@]+/\d+$")

Download = Callable[[str, str], str]  # (model_uri, into_dir) -> the model's directory


@dataclass(frozen=True)
class Fetched:
    """Where a model was put, and where it came from."""

    path: str  # the directory to load the model from
    source: str  # "node cache" or "mlflow"
    cached: bool  # whether the cache holds it now (False: not cacheable here, see `note`)
    private_dir: str | None = None  # a download only this caller uses: remove it when done
    note: str = ""  # why the cache was not used, if it was not


def download_from_mlflow(model_uri: str, into: str) -> str:
    """The `Download` replicas and the deploy's node job use: MLflow's own artifact client,
    imported here so that importing this module stays cheap."""
    import mlflow.artifacts

    return mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=into)


def cache_root() -> str | None:
    """The cache directory, or None when `MLRAY_MODEL_CACHE_DIR` turns it off."""
    raw = os.environ.get(DIR_ENV)
    if raw is None:
        return DEFAULT_DIR
    raw = raw.strip()
    return None if raw.lower() in DISABLED else raw


def entry_key(tracking_uri: str | None, model_uri: str, run_id: str | None) -> str | None:
    """The entry's name, or None for a URI whose content may change (an alias, a path)."""
    if not run_id or not _PINNED.match(model_uri or ""):
        return None
    text = "\n".join((tracking_uri or "", model_uri, str(run_id)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def fetch(
    model_uri: str,
    run_id: str | None,
    tracking_uri: str | None,
    download: Download,
    root: str | None,
) -> Fetched:
    """The model's directory: the node's copy if there is one, else a download that becomes
    the node's copy. Errors of the download itself propagate (the caller cannot load)."""
    key = entry_key(tracking_uri, model_uri, run_id)
    why = (
        "the model cache is off" if root is None
        else "its URI is not pinned to a version of one run" if key is None
        else _unsafe(root)
    )  # fmt: skip
    if why or root is None or key is None:
        return _private(model_uri, download, why or "")
    entry = os.path.join(root, key)
    path = entry_path(entry)
    if path is not None:
        _touch(entry)
        return Fetched(path, "node cache", True)
    try:
        partial = tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=root)
    except OSError as e:
        return _private(model_uri, download, f"cannot write to {root}: {e}")
    try:
        local = download(model_uri, partial)
        rel = os.path.relpath(local, partial)
        if rel.startswith(os.pardir):
            raise ValueError(f"got {local!r} from the download; expected a path in {partial}")
        meta = {"model_uri": model_uri, "run_id": run_id, "tracking_uri": tracking_uri,
                "path": rel, "fetched_at": round(time.time(), 3)}  # fmt: skip
        with open(os.path.join(partial, ENTRY_META), "w") as f:
            json.dump(meta, f)
        if entry_path(entry) is None:  # else another process put the model there meanwhile
            if os.path.lexists(entry):  # broken (files removed under it): set it aside
                _retire(entry)
            with contextlib.suppress(OSError):  # another process put the model there first
                os.rename(partial, entry)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    path = entry_path(entry)
    if path is None:  # could not put it in place: this caller keeps its download for itself,
        # out of the cache's directory (pruning removes partial downloads there)
        private = tempfile.mkdtemp(prefix="mlray-model-")
        moved = shutil.move(partial, os.path.join(private, "download"))
        note = f"could not put the download in place at {entry}"
        return Fetched(os.path.join(moved, rel), "mlflow", False, private, note)
    shutil.rmtree(partial, ignore_errors=True)  # left only if the other process won
    return Fetched(path, "mlflow", True)


def entry_path(entry: str) -> str | None:
    """The model directory of a complete entry, None if there is none (or a broken one)."""
    try:
        with open(os.path.join(entry, ENTRY_META)) as f:
            rel = json.load(f)["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = os.path.normpath(os.path.join(entry, str(rel)))
    inside = path == entry or path.startswith(entry + os.sep)
    return path if inside and os.path.isfile(os.path.join(path, "MLmodel")) else None


def prune(root: str, keep: Iterable[str], now: float | None = None) -> list[str]:
    """Remove the entries no app needs (not in `keep`, unused for UNUSED_KEEP_S) and dead
    partial downloads. Returns the names removed. Safe to run on several processes at once."""
    now = time.time() if now is None else now
    keep = set(keep)
    if _unsafe(root, create=False):
        return []
    removed = []
    for name in sorted(os.listdir(root)):
        full = os.path.join(root, name)
        try:
            age = now - os.stat(full).st_mtime
        except OSError:
            continue
        if name.startswith(STALE_PREFIX):  # a retire that died between rename and delete
            shutil.rmtree(full, ignore_errors=True)
            continue
        if name.startswith(PARTIAL_PREFIX):
            old = age > PARTIAL_KEEP_S
        else:
            old = name not in keep and age > UNUSED_KEEP_S
        if old and os.path.isdir(full) and _retire(full):
            removed.append(name)
    return removed


def _private(model_uri: str, download: Download, note: str) -> Fetched:
    """A download for this caller alone, as without a cache."""
    private = tempfile.mkdtemp(prefix="mlray-model-")
    try:
        return Fetched(download(model_uri, private), "mlflow", False, private, note)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise


def _unsafe(root: str, create: bool = True) -> str:
    """Why `root` cannot be trusted with models ("" if it can); creates it if missing."""
    try:
        if create:
            os.makedirs(root, mode=0o700, exist_ok=True)
        st = os.lstat(root)
    except OSError as e:
        return f"cannot use {root}: {e}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{root} is not a directory"
    if st.st_uid != os.getuid():
        return f"{root} belongs to uid {st.st_uid}, not to this process's uid {os.getuid()}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{root} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return ""


def _touch(entry: str) -> None:
    """Mark the entry used now (prune keeps what was used within UNUSED_KEEP_S)."""
    with contextlib.suppress(OSError):
        os.utime(entry)


def _retire(path: str) -> bool:
    """Move `path` aside, then delete it: readers never see it half deleted, and of two
    processes retiring it, one does."""
    aside = os.path.join(os.path.dirname(path), f"{STALE_PREFIX}{uuid.uuid4().hex[:12]}")
    try:
        os.rename(path, aside)
    except OSError:
        return False
    shutil.rmtree(aside, ignore_errors=True)
    return True
