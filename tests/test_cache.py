"""The cache file: the weights-hash memo, upgrading older files, and a cache directory that cannot be written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import zsclip.store.cache
from zsclip.core.errors import ZsclipError
from zsclip.store.cache import Cache

from .conftest import REPO


@pytest.fixture
def hashes(monkeypatch) -> list[int]:
    """Counts how many times a file is read for its sha256."""
    calls = []
    counting = SimpleNamespace(sha256=lambda *a: calls.append(1) or hashlib.sha256(*a))
    monkeypatch.setattr(zsclip.store.cache, "hashlib", counting)
    return calls


def test_a_weights_file_is_hashed_once_then_remembered(tmp_path, hashes, private_cache):
    weights = tmp_path / "w.bin"
    weights.write_bytes(os.urandom(4096))
    first = Cache().file_sha256(weights)
    assert first == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert Cache().file_sha256(weights) == first  # another run: the memo, not the file
    assert len(hashes) == 1


def test_a_weights_file_rewritten_with_its_old_size_and_mtime_is_hashed_again(tmp_path, hashes):
    """The memo key has ctime and inode besides size and mtime (issue 12.10, `touch -r`)."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"a" * 4096)
    before = weights.stat()
    first = Cache().file_sha256(weights)
    weights.write_bytes(b"b" * 4096)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (weights.stat().st_size, weights.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert Cache().file_sha256(weights) == hashlib.sha256(b"b" * 4096).hexdigest() != first
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(b"c" * 4096)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, weights)  # a new inode
    assert Cache().file_sha256(weights) == hashlib.sha256(b"c" * 4096).hexdigest()
    assert len(hashes) == 3


_SCHEMA_3 = """
CREATE TABLE text_embeddings (fingerprint TEXT NOT NULL, precision TEXT NOT NULL, prompt TEXT NOT NULL,
    vector BLOB NOT NULL, PRIMARY KEY (fingerprint, precision, prompt)) WITHOUT ROWID;
CREATE TABLE models (fingerprint TEXT PRIMARY KEY, spec TEXT NOT NULL, last_used REAL NOT NULL);
CREATE TABLE image_embeddings (fingerprint TEXT NOT NULL, variant TEXT NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, content_hash TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (fingerprint, variant, path)) WITHOUT ROWID;
CREATE INDEX image_by_hash ON image_embeddings (content_hash, fingerprint, variant);
CREATE TABLE file_hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL);
PRAGMA user_version = 3;
"""


def test_a_version_3_cache_is_upgraded_and_keeps_its_vectors(private_cache, tmp_path):
    from zsclip.store.embeddings import ImageStore, content_hash

    image = tmp_path / "x.png"
    image.write_bytes(b"not really a png, but hashed all the same")
    st = image.stat()
    private_cache.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(private_cache / "zsclip.sqlite")) as old:
        old.executescript(_SCHEMA_3)
        old.execute(
            "INSERT INTO text_embeddings VALUES ('fp', 'fp32', 'a cat', ?)", (np.ones(4, np.float32).tobytes(),)
        )
        old.execute(
            "INSERT INTO image_embeddings VALUES ('fp', 'v', ?, ?, ?, ?, ?)",
            (str(image), st.st_size, st.st_mtime_ns, content_hash(str(image)), np.ones(4, np.float32).tobytes()),
        )
        old.commit()
    cache = Cache()
    assert list(cache.get_text("fp", "fp32", ["a cat"])["a cat"]) == [1, 1, 1, 1]
    store = ImageStore.open(cache, "fp", "v")
    vector, identity = store.lookup(str(image))  # found through the content hash: the old row has no ctime
    assert list(vector) == [1, 1, 1, 1] and identity is not None
    store.put([(identity, vector)])
    assert store.lookup(str(image))[1] is None  # recorded with ctime and inode now
    assert cache.conn.execute("PRAGMA user_version").fetchone()[0] == zsclip.store.cache.SCHEMA_VERSION


# -- a cache directory that cannot be written (issue 12.9) ---------------------------------------------------
def _run_read_only(directory: Path, args: list[str], env: dict, seed: Path | None = None):
    """Run `python args` with `directory` read-only: a read-only mount when running as root (permissions do not
    stop root), else mode 0555. `seed`: files to find in it."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    command = [sys.executable, *args]
    if os.geteuid() != 0:
        if seed:
            shutil.copytree(seed, directory, dirs_exist_ok=True)
        directory.chmod(0o555)
        try:
            return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        finally:
            directory.chmod(0o755)
    if not shutil.which("unshare") or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("running as root without mount namespaces: no way to make a directory read-only")
    script = 'mount -t tmpfs tmpfs "$1" && cp -a "$2"/. "$1"/ && mount -o remount,ro "$1" && shift 2 && exec "$@"'
    source = seed or directory.parent / "empty-seed"
    source.mkdir(exist_ok=True)
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(directory), str(source), *command],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


CLASSIFY = ["-m", "zsclip", "classify", "examples/shapes", "-c", "red star,blue cross", "-m", "shapes", "-f", "jsonl"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> tuple[list[dict], Path]:
    """Labels from a run with a writable cache, and that cache (to find in a read-only directory)."""
    cache = tmp_path_factory.mktemp("writable-cache")
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZSCLIP_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, *CLASSIFY], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()], cache


@pytest.mark.slow  # a process each
@pytest.mark.parametrize("where", ["empty", "missing-below", "filled"])
def test_classify_with_a_read_only_cache_works_uncached_with_one_warning(tmp_path, reference_run, where):
    records, filled = reference_run
    ro = tmp_path / "ro"
    cache_dir = ro / "sub" if where == "missing-below" else ro
    out = _run_read_only(ro, CLASSIFY, {"ZSCLIP_CACHE_DIR": str(cache_dir)}, filled if where == "filled" else None)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line) for line in out.stdout.splitlines()] == records
    warnings = [line for line in out.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "read-only" in warnings[0] and "ZSCLIP_CACHE_DIR" in warnings[0], out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", [["info"], ["clear"], ["clear", "--model", "shapes"]])
def test_cache_info_and_clear_on_a_read_only_cache_are_one_line_errors(tmp_path, reference_run, command):
    _, filled = reference_run
    out = _run_read_only(
        tmp_path / "ro", ["-m", "zsclip", "cache", *command], {"ZSCLIP_CACHE_DIR": str(tmp_path / "ro")}, filled
    )
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "read-only" in lines[0] and "ZSCLIP_CACHE_DIR" in lines[0], out.stderr


def test_the_api_says_read_only_for_maintenance_and_goes_on_for_runs(tmp_path, monkeypatch, capsys):
    """In process: a cache whose directory the OS reports as not writable."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        zsclip.store.cache.os, "access", lambda p, m: False if Path(p) == blocked else real_access(p, m)
    )
    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with pytest.raises(ZsclipError, match="read-only"):
        Cache(blocked / "cache").info()
    cache = Cache(blocked / "cache")
    cache.put_text("fp", "fp32", [("a", np.ones(2, np.float32))])
    assert list(cache.get_text("fp", "fp32", ["a"])["a"]) == [1, 1]  # in memory for this run
    assert not cache.persistent
    assert capsys.readouterr().err.count("warning") == 1
    Cache(blocked / "cache").put_text("fp", "fp32", [("b", np.ones(2, np.float32))])
    assert capsys.readouterr().err == ""  # once per directory and process


def test_a_long_lived_process_follows_a_cache_file_deleted_and_made_again(tmp_path, monkeypatch):
    """Issue 31: with serve running, the cache database deleted and made again by another command: every other
    command waited 60 s on serve's lock and failed, and serve kept writing into the deleted file (its work lost at
    exit). A connection now checks that its file is still the one it opened, and reopens the new one."""
    import time as clock

    import numpy as np

    from zsclip.store import cache as cache_module
    from zsclip.store.cache import DB_NAME, Cache
    from zsclip.store.embeddings import ImageStore

    monkeypatch.setattr(cache_module, "RECHECK_SECONDS", 0.0)
    served = Cache(tmp_path)  # the long-lived process (serve)
    served.put_text("fp", "fp32", [("a", np.ones(4, np.float32))])
    store = ImageStore.open(served, "fp", "v")
    assert store.conn.execute("SELECT count(*) FROM image_embeddings").fetchone() == (0,)
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / (DB_NAME + suffix)).unlink(missing_ok=True)
    start = clock.monotonic()
    other = Cache(tmp_path)  # another command makes the cache anew
    other.put_text("fp", "fp32", [("b", np.ones(4, np.float32))])
    assert clock.monotonic() - start < 5
    served.put_text("fp", "fp32", [("c", np.full(4, 2, np.float32))])  # serve's work goes into the new file
    assert set(Cache(tmp_path).get_text("fp", "fp32", ["a", "b", "c"])) == {"b", "c"}
    assert store.conn.execute("SELECT count(*) FROM image_embeddings").fetchone() == (0,)  # the new file's
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / (DB_NAME + suffix)).unlink(missing_ok=True)
    assert store.conn.execute("SELECT count(*) FROM image_embeddings").fetchone() == (0,)  # made again, tables too


def test_a_new_cache_opened_by_two_processes_at_once_waits_for_the_other(tmp_path, monkeypatch):
    """Two first `zsclip models --prepare` at once: one failed with "cannot open the cache (database is locked)",
    SQLite refusing the WAL switch or the tables of a new file at once rather than after its busy timeout."""
    import sqlite3

    from zsclip.store.cache import Cache

    real, calls = Cache._set_up, []

    def busy_twice(self, target):
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real(self, target)

    monkeypatch.setattr(Cache, "_set_up", busy_twice)
    assert Cache(tmp_path).conn.execute("SELECT count(*) FROM models").fetchone() == (0,)
    assert len(calls) == 3
