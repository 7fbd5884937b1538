"""How the engine spreads work over threads: decoding batches, and on CPU forward passes on
single-threaded workers, with real tiny models and real DreamBench images."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image

import picbench.metrics.parallel as parallel_module
from picbench.imaging import load_rgb
from picbench.metrics.decoding import ScoreItem
from picbench.metrics.encoders import CPU_FORWARD_CHUNK, Encoder
from picbench.metrics.engine import MetricEngine
from picbench.metrics.parallel import decode_batches, torch_workers
from picbench.records import Sample, Subject

DOG_EVAL = ("dreambench/dataset/dog/00.jpg", "dreambench/dataset/dog/01.jpg")


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photos(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eleven DreamBench photos as generated images: more than one forward chunk."""
    out = tmp_path_factory.mktemp("photos")
    paths = []
    for i, src in enumerate(sorted((data_dir / "dreambench" / "dataset").glob("*/00.jpg"))[: CPU_FORWARD_CHUNK + 3]):
        load_rgb(src).resize((96, 96), Image.BICUBIC).save(out / f"{i}.png")
        paths.append(out / f"{i}.png")
    return paths


def _items(photos: list[Path]) -> list[ScoreItem]:
    sample = Sample("dog", "a dog in the jungle", 512, 512, "single", (Subject("dog", "dog", DOG_EVAL[:1], DOG_EVAL),))
    return [ScoreItem(sample, seed, path) for seed, path in enumerate(photos)]


def test_torch_workers_run_torch_on_one_thread_and_leave_the_caller_alone(two_torch_threads):
    seen: list[int] = []
    with torch_workers(2) as pool:
        assert sorted(pool.submit(torch.get_num_threads).result() for _ in range(4)) == [1, 1, 1, 1]
        assert torch.get_num_threads() == 2
        fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        fresh.start()
        fresh.join()
    assert seen == [2]  # the default a new thread starts from is the caller's, not the workers'
    assert torch.get_num_threads() == 2


class _Jobs:
    """Seven decoding jobs that record which ran."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return 7

    def __getitem__(self, index: int) -> int:
        with self.lock:
            self.started.append(index)
        return index


@pytest.fixture
def decode_submissions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(kind of jobs, job index) that decode_batches hands to its pool, in order: recorded when
    submitted, so what the caller has asked for so far is known without waiting for the threads."""
    submitted: list[tuple[str, int]] = []
    real = parallel_module.torch_workers

    @contextmanager
    def recording(*args, **kwargs):
        with real(*args, **kwargs) as pool:
            submit = pool.submit

            def record(fn, *a):
                submitted.append((type(fn.__self__).__name__, a[0]))
                return submit(fn, *a)

            pool.submit = record
            yield pool

    monkeypatch.setattr(parallel_module, "torch_workers", recording)
    return submitted


def test_decoding_takes_turns_without_overlap_and_runs_one_batch_ahead_with_it(decode_submissions):
    """Without overlap the next batch is not asked for while the caller works on this one; with
    it, one batch ahead. Order is kept either way."""
    jobs = _Jobs()
    batches = decode_batches(jobs, 3, 2, overlap=False)
    assert next(batches) == [0, 1, 2]
    assert [i for _, i in decode_submissions] == [0, 1, 2] and sorted(jobs.started) == [0, 1, 2]  # nothing asked for while the caller works
    assert list(batches) == [[3, 4, 5], [6]]
    decode_submissions.clear()
    jobs = _Jobs()
    batches = decode_batches(jobs, 3, 2, overlap=True)
    assert next(batches) == [0, 1, 2]
    assert [i for _, i in decode_submissions] == [0, 1, 2, 3, 4, 5]  # the next batch is decoded meanwhile
    assert list(batches) == [[3, 4, 5], [6]]
    assert sorted(jobs.started) == list(range(7))
    assert list(decode_batches(_Jobs(), 3, 0, overlap=False)) == [[0, 1, 2], [3, 4, 5], [6]]


def test_cpu_forward_passes_run_on_single_threaded_workers_at_once_and_change_no_number(photos, data_dir, monkeypatch, two_torch_threads):
    """Every model's chunks go to the workers together, each worker running torch on one thread,
    and the scores equal those of each image scored alone. "Together" is shown by structure, not
    by a clock: the first CLIP chunk and the first DINO chunk wait for each other at a barrier,
    which they can pass only if both were handed to the workers before either finished."""
    calls: list[tuple[str, str, int, int]] = []
    original = Encoder.encode_images
    meet = threading.Barrier(2, timeout=120)  # a deadlock guard only: it breaks (and the test fails) if the chunks ran one after the other
    first: set[str] = set()
    lock = threading.Lock()

    def recorded(self, pixels):
        with lock:
            is_first = self.role not in first
            first.add(self.role)
        if is_first:
            meet.wait()
        calls.append((self.role, threading.current_thread().name, torch.get_num_threads(), pixels.shape[0]))
        return original(self, pixels)

    monkeypatch.setattr(Encoder, "encode_images", recorded)
    items = _items(photos)
    together = list(MetricEngine(models="tiny", metrics=["clip_i", "dino"], detector=None, batch_size=len(items)).score(items, data_dir))
    assert not meet.broken and first == {"clip", "dino"}
    assert {name.split("_")[0] for _, name, _, _ in calls} == {"picbench-forward"}  # every chunk on a forward worker
    assert len({name for _, name, _, _ in calls}) == 2  # both workers (one a core) took chunks
    assert {threads for _, _, threads, _ in calls} == {1}  # each worker runs torch on one thread
    for role in ("clip", "dino"):  # the references (2 images), then the 11 images in chunks of at most 8
        assert sorted(n for r, _, _, n in calls if r == role) == sorted([len(DOG_EVAL), CPU_FORWARD_CHUNK, len(items) - CPU_FORWARD_CHUNK])
    alone = [s for item in items for s in MetricEngine(models="tiny", metrics=["clip_i", "dino"], detector=None).score([item], data_dir)]
    assert [s.metrics for s in together] == [s.metrics for s in alone]
    assert all(s.metrics["clip_i"] is not None for s in together)


def test_cpu_decoding_runs_ahead_only_where_no_openmp_region_shares_the_cores(
    photos, data_dir, monkeypatch, two_torch_threads, decode_submissions
):
    """With every forward pass on single-threaded workers the next batch is decoded meanwhile. A
    detector runs on OpenMP threads in the calling thread, and with more cores than a batch has
    chunks each worker runs several torch threads: then decoding waits its turn."""
    items = _items(photos[:3])
    for detector, cores, ahead, worker_threads in ((None, 2, True, 1), ("grounding-dino", 2, False, 1), (None, 4, False, 2)):
        torch.set_num_threads(cores)
        decode_submissions.clear()
        metrics = ["clip_i", "dino"] if detector is None else ["clip_i", "dino", "iou"]  # two models: a chunk for each worker
        engine = MetricEngine(models="tiny", metrics=metrics, detector=detector, batch_size=1, num_workers=2)
        stream = engine.score(items, data_dir)
        next(stream)
        assert engine.scheduler.overlap is ahead, (detector, cores)
        images = [i for kind, i in decode_submissions if kind == "GeneratedImages"]
        assert images == ([0, 1] if ahead else [0]), (detector, cores)  # the next image asked for while this one is scored, or not
        assert engine.scheduler.pool is not None and engine.scheduler.pool.submit(torch.get_num_threads).result() == worker_threads
        assert len(list(stream)) == 2
        assert torch.get_num_threads() == cores
