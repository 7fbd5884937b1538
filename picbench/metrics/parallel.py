"""How the metric engine spreads its work over threads: decoding, and on CPU the forward passes.

Decoding: Pillow releases the GIL while it decodes and resizes, so threads scale like processes
and start in no time.

Forward passes on CPU: at the engine's chunk size (8 images) a ViT gains little from a second
OpenMP thread, and an OpenMP parallel region stalls whenever one of its threads is pre-empted
(by a decoding thread, say). So each chunk runs on a worker thread that runs torch on one thread,
one worker per core, and the chunks of every model go through the workers together: faster than
one chunk at a time on all OpenMP threads (measured: docs/benchmarks.md, "Figures behind
defaults"). With no OpenMP region left to stall, the next batch is decoded while this one's
chunks run. A row's embedding does not depend on the chunk it shares (encoders.MIN_BATCH), so spreading chunks over workers changes no number;
one OpenMP thread instead of several may change the last bit of a matrix product (about 1e-7).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import torch

from picbench.metrics.encoders import CPU_FORWARD_CHUNK


class Jobs(Protocol):
    """Indexed decoding work: ``jobs[i]`` decodes and preprocesses item ``i``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


@contextmanager
def torch_workers(workers: int, torch_threads: int = 1, prefix: str = "picbench") -> Iterator[ThreadPoolExecutor]:
    """A pool of ``workers`` threads, each running torch on ``torch_threads`` threads, all started
    before it is handed out. Torch's thread count is per thread once a thread has used it, but
    setting it also sets the default a new thread starts from; that default, and the caller's own
    count, are left as they were."""
    caller = torch.get_num_threads()

    def init() -> None:
        torch.get_num_threads()  # fixes this thread's settings now, so its first parallel op does not reset them
        torch.set_num_threads(torch_threads)

    pool = ThreadPoolExecutor(workers, thread_name_prefix=prefix, initializer=init)
    try:
        started = threading.Barrier(workers)  # every worker holds one of these tasks, so every worker is started
        for future in [pool.submit(started.wait) for _ in range(workers)]:
            future.result()
        torch.set_num_threads(caller)
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def decode_batches(jobs: Jobs, batch_size: int, threads: int, overlap: bool) -> Iterator[list[Any]]:
    """``jobs`` decoded batch by batch, each batch's images on ``threads`` threads (each running
    torch on one thread).

    ``overlap``: the next batch is decoded while the caller runs the models on this one. Without
    it decoding and the forward passes take turns, for when the forward passes run on OpenMP
    threads (a CPU detector): a thread pre-empted by a decoder holds up the whole parallel region
    (measured: docs/benchmarks.md, "Figures behind defaults")."""
    n = len(jobs)
    starts = list(range(0, n, batch_size))
    if threads <= 0:
        for start in starts:
            yield [jobs[i] for i in range(start, min(start + batch_size, n))]
        return
    with torch_workers(threads, 1, "picbench-decode") as pool:

        def submit(start: int) -> list[Future]:
            return [pool.submit(jobs.__getitem__, i) for i in range(start, min(start + batch_size, n))]

        pending: deque[list[Future]] = deque()
        for k, start in enumerate(starts):
            if not pending:
                pending.append(submit(start))
            if overlap and k + 1 < len(starts):
                pending.append(submit(starts[k + 1]))
            yield [f.result() for f in pending.popleft()]


def encode_all(
    work: Sequence[tuple[Callable[[Any], torch.Tensor], Any]], pool: ThreadPoolExecutor | None, batch_size: int
) -> list[np.ndarray]:
    """``encode(inputs)`` for each (encode, inputs) pair: an encoder's ``encode_images`` and a
    tensor of images, or its ``encode_texts`` and a list of prompts. With a pool (CPU), every
    pair's chunks of :data:`~picbench.metrics.encoders.CPU_FORWARD_CHUNK` go to the pool's workers
    at once; without one (CUDA), each pair is encoded in turn on the calling thread, ``batch_size``
    inputs a forward pass."""
    step = CPU_FORWARD_CHUNK if pool is not None else batch_size
    submit = pool.submit if pool is not None else _now
    chunks = [[submit(encode, inputs[i : i + step]) for i in range(0, len(inputs), step)] for encode, inputs in work]
    return [np.concatenate([f.result().numpy() for f in futures]) if futures else np.zeros((0, 0), np.float32) for futures in chunks]


def _now(fn: Any, *args: Any) -> Future:
    """``fn(*args)`` run on this thread, as a done Future."""
    future: Future = Future()
    future.set_result(fn(*args))
    return future
