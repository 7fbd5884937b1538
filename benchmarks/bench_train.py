"""Trainer speed and memory: the tiny config with and without VAA and gradient checkpointing.

Each variant runs in a fresh process (so peak memory is its own): a paste-pairs set is built from
the shared data, the tiny random-weight FLUX trains `--steps` steps (the first `--warmup` are not
timed), and the variant reports optimizer steps per second and peak memory (CUDA: max allocated;
CPU: peak RSS of the process). Ends with one JSON line; `vaa_overhead` is steps/s without VAA
divided by steps/s with it (same checkpointing setting). Every variant runs twice, in two rounds
of opposite order, and keeps its faster run (a shared machine's load comes and goes).

    python benchmarks/bench_train.py [--steps 30] [--warmup 5] [--size 128] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {
    "vaa+ckpt": {"vaa": True, "gradient_checkpointing": True},
    "vaa": {"vaa": True, "gradient_checkpointing": False},
    "plain+ckpt": {"vaa": False, "gradient_checkpointing": True},
    "plain": {"vaa": False, "gradient_checkpointing": False},
}


def run_variant(name: str, args: argparse.Namespace) -> dict:
    import dataclasses

    import torch
    from diffusers.utils import logging as diffusers_logging

    from picbench.reference_impl.training import CONFIG_DIR, load_config
    from picbench.reference_impl.training.loop import Trainer

    diffusers_logging.set_verbosity_error()
    work = Path(args.pairs).parent
    config = load_config(CONFIG_DIR / "tiny.toml")
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, **VARIANTS[name]),
        data=dataclasses.replace(config.data, pairs=args.pairs, buckets=((args.size, args.size),), ref_long_side=args.size // 2),
        train=dataclasses.replace(config.train, global_batch=2, micro_batch=2),
        stages=(dataclasses.replace(config.stages[1], steps=args.steps),),
        checkpoint=dataclasses.replace(config.checkpoint, out=tempfile.mkdtemp(prefix=f"run-{name}-", dir=work), every=10**9),
    )
    seconds: list[float] = []
    trainer = Trainer(config, progress=False, on_step=lambda r: seconds.append(r["seconds"]))
    built_rss = _rss_mb()
    trainer.run()
    timed = sorted(seconds[args.warmup :])
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10 - built_rss  # ru_maxrss: KiB on Linux
    median = timed[len(timed) // 2]
    return {"variant": name, "steps_per_s": 1 / median, "peak_mb": round(peak, 1), "device": "cuda" if torch.cuda.is_available() else "cpu"}


def _rss_mb() -> float:
    """The process's resident memory now, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**10
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--size", type=int, default=128, help="training resolution (square bucket), multiple of 32")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return
    from picbench.pairs.paste import build_paste_pairs
    from picbench.paths import find_data_dir

    pairs = Path(tempfile.mkdtemp(prefix="bench_train_")) / "pairs"
    build_paste_pairs(find_data_dir(args.data_dir), pairs, seed=0, n_multi=4, n_single=2)
    results: dict[str, dict] = {}
    for name in [*VARIANTS, *reversed(VARIANTS)]:  # two rounds in opposite orders; each variant keeps its faster run
        cmd = [
            sys.executable,
            __file__,
            "--variant",
            name,
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--size",
            str(args.size),
            "--pairs",
            str(pairs),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name:>11}: {measured['steps_per_s']:.2f} steps/s, peak {measured['peak_mb']:.0f} MB", flush=True)
        if name not in results or measured["steps_per_s"] > results[name]["steps_per_s"]:
            results[name] = measured
    summary = {
        "benchmark": "bench_train",
        "config": f"tiny FLUX, {args.size} px, micro-batch 2, {args.steps - args.warmup} timed steps",
        "variants": results,
        "vaa_overhead": results["plain+ckpt"]["steps_per_s"] / results["vaa+ckpt"]["steps_per_s"],
        "vaa_overhead_no_ckpt": results["plain"]["steps_per_s"] / results["vaa"]["steps_per_s"],
        "checkpointing_slowdown": results["vaa"]["steps_per_s"] / results["vaa+ckpt"]["steps_per_s"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
