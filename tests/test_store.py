"""The run store: records, schema versions, atomic images, several writers, full disk."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from picbench.records import Generation, Score, SubjectScore
from picbench.store import STORE_FILE, IncompatibleStoreError, RunStore, StoreError


def _generation(i: int, **kw) -> Generation:
    return Generation("paste", "1", {"fit": "stretch", "models": "default"}, f"s{i}", 0, **kw)


def test_records_round_trip_and_rewrites_are_counted(tmp_path: Path) -> None:
    score = Score(
        "s1",
        0,
        {"clip_i": 0.25, "iou": None},
        (SubjectScore("dog", {"clip_i": 0.25}, (1.0, 2.0, 3.0, 4.0), 0.5),),
        failures=("x",),
        smoke=True,
    )
    with RunStore(tmp_path) as store:
        g1, g2 = _generation(1, image_path="images/a.png"), _generation(2, failure="wrong size 3x3, expected 64x64")
        store.put_generation(g1)
        store.put_generation(g2)
        store.put_generation(g1)
        assert store.get_generations([g1.key, g2.key, "absent"]) == {g1.key: g1, g2.key: g2}
        store.put_score(g1.key, "scorer-a", score)
        assert store.get_scores("scorer-a", [g1.key, g2.key]) == {g1.key: score}
        assert store.get_scores("scorer-b", [g1.key]) == {}
        store.put_part("0/2", {"method": "paste"}, "running")
        store.put_part("0/2", {"method": "paste"}, "done")
        assert store.parts() == {"0/2": ({"method": "paste"}, "done")}
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        assert dict(db.execute("SELECT sample_id, writes FROM generations")) == {"s1": 2, "s2": 1}
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with RunStore(tmp_path) as reopened:  # reopening reuses, never resets
        assert set(reopened.get_generations([g1.key, g2.key])) == {g1.key, g2.key}


def test_a_store_of_another_schema_is_refused(tmp_path: Path) -> None:
    RunStore(tmp_path).close()
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        db.execute("UPDATE store_meta SET value = '99' WHERE key = 'schema_version'")
        db.execute("UPDATE store_meta SET value = '9.0' WHERE key = 'picbench_version'")
    with pytest.raises(IncompatibleStoreError, match=r"picbench 9\.0 with store schema 99.*reads store schema 1.*not reused"):
        RunStore(tmp_path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / STORE_FILE) as db:
        db.execute("CREATE TABLE results (x)")
    with pytest.raises(IncompatibleStoreError, match="no picbench store header"):
        RunStore(foreign)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / STORE_FILE).write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a usable picbench store"):
        RunStore(garbage)


def test_the_embedding_cache_shares_the_store_file(tmp_path: Path) -> None:
    from picbench.metrics.cache import EmbeddingCache

    with RunStore(tmp_path) as store:
        cache = EmbeddingCache(store.path)
        cache.put_many("clip", {"k": np.arange(4, dtype=np.float32)})
        store.put_generation(_generation(1, image_path="images/a.png"))
    with RunStore(tmp_path) as again:  # emb_* tables do not make the store foreign
        assert len(again.get_generations([_generation(1).key])) == 1
    np.testing.assert_array_equal(EmbeddingCache(tmp_path / STORE_FILE).get_many("clip", ["k"])["k"], np.arange(4, dtype=np.float32))


def test_unwritable_output_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot be created"):
        RunStore(blocker / "run")


_WRITER = textwrap.dedent("""
    import sys
    from picbench.records import Generation, Score
    from picbench.store import RunStore
    worker, n = int(sys.argv[2]), int(sys.argv[3])
    with RunStore(sys.argv[1]) as store:
        for i in range(n):
            sample = f"w{worker}-{i}" if i % 2 else f"shared-{i}"
            g = Generation("paste", "1", {}, sample, 0, image_path=f"images/{sample}.png")
            store.put_generation(g)
            store.put_score(g.key, "scorer", Score(sample, 0, {"clip_i": i / n}))
""")


def test_two_processes_writing_one_store_do_not_corrupt_it(tmp_path: Path) -> None:
    n = 150
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    RunStore(tmp_path).close()
    procs = [
        subprocess.Popen([sys.executable, str(script), str(tmp_path), str(w), str(n)], stderr=subprocess.PIPE, text=True) for w in (0, 1)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        writes = dict(db.execute("SELECT sample_id, writes FROM generations"))
        n_scores = db.execute("SELECT count(*) FROM scores").fetchone()[0]
    shared = {f"shared-{i}" for i in range(0, n, 2)}
    own = {f"w{w}-{i}" for w in (0, 1) for i in range(1, n, 2)}
    assert set(writes) == shared | own and n_scores == len(shared | own)
    assert all(writes[s] == 2 for s in shared) and all(writes[s] == 1 for s in own)


def test_images_are_written_atomically(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        g = _generation(1)
        name = store.image_name(g)
        assert name.startswith("images/s1__seed0__") and name.endswith(".png")
        store.save_image(Image.new("RGB", (8, 8), "red"), name)
        store.save_image(Image.new("RGB", (8, 8), "blue"), name)
        assert Image.open(tmp_path / name).getpixel((0, 0)) == (0, 0, 255)
    assert [p.name for p in (tmp_path / "images").iterdir()] == [Path(name).name]


_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from PIL import Image
    from picbench.records import Generation
    from picbench.store import RunStore, StoreError
    store = RunStore(sys.argv[1])
    g = Generation("paste", "1", {}, "s1", 0)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG, like a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    try:
        store.save_image(noise, "images/keep.png")
    except StoreError as exc:
        print("StoreError:", exc)
    store.put_generation(g)   # the store itself still works
    print("stored", len(store.get_generations([g.key])))
""")


def test_a_failed_image_write_keeps_the_old_file_and_the_store(tmp_path: Path) -> None:
    with RunStore(tmp_path) as store:
        store.save_image(Image.new("RGB", (8, 8), "green"), "images/keep.png")
    script = tmp_path / "full.py"
    script.write_text(_FULL_DISK)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "StoreError: cannot write image" in done.stdout and "rerun to resume" in done.stdout
    assert "stored 1" in done.stdout
    assert Image.open(tmp_path / "images" / "keep.png").getpixel((0, 0)) == (0, 128, 0)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["keep.png"]


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    from picbench.atomic import atomic_write

    target = tmp_path / "out" / "results.json"
    with atomic_write(target) as fh:
        fh.write("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]  # no temporary file left


def test_run_lock_is_per_part_and_dies_with_its_holder(tmp_path: Path) -> None:
    """A second holder of one part is refused naming the first; a holder killed with SIGKILL
    leaves no stale lock (the kernel drops it with the process)."""
    import signal

    from picbench.store import RunLock, RunLockedError

    with RunLock(tmp_path, "0/2"):
        with pytest.raises(RunLockedError, match=f"part 0/2.*pid {os.getpid()}"):
            RunLock(tmp_path, "0/2").acquire()
        with RunLock(tmp_path, "1/2"):
            pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from picbench.store import RunLock; import time; RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with RunLock(tmp_path):
        pass
