"""How long `picbench validate dreambench` takes to decode its 158 images: one thread (the
baseline) against the default thread pool, and a warm re-validation (decode results cached
per file version). Usage: python benchmarks/validate_images.py [--data-dir DIR]"""

from __future__ import annotations

import argparse
import json
import os
import time

from picbench.benches import load_bench
from picbench.validate import clear_image_cache, validate_bench


def timed(bench, workers: int | None, cold: bool) -> tuple[float, int]:
    if cold:
        clear_image_cache()
    start = time.perf_counter()
    report = validate_bench(bench, workers=workers)
    return time.perf_counter() - start, len(report.errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--bench", default="dreambench")
    args = parser.parse_args()
    bench = load_bench(args.bench, args.data_dir)
    n_images = len(bench.image_paths())
    pool = min(4, os.cpu_count() or 1)
    serial, errors_serial = timed(bench, 1, cold=True)
    parallel, errors_parallel = timed(bench, None, cold=True)
    warm, _ = timed(bench, None, cold=False)
    assert errors_serial == errors_parallel, "thread count must not change the verdict"
    print(f"validate {bench.name}: {len(bench)} samples, {n_images} images decoded with picbench.imaging.load_rgb")
    print(f"  1 thread (baseline): {serial:.2f} s   {pool} threads: {parallel:.2f} s   warm (cached): {warm:.2f} s")
    print(
        json.dumps(
            {
                "bench": bench.name,
                "images": n_images,
                "serial_s": round(serial, 3),
                "threads": pool,
                "threaded_s": round(parallel, 3),
                "speedup": round(serial / parallel, 2),
                "warm_s": round(warm, 3),
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
