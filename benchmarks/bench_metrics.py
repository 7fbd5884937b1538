"""Metric engine vs the naive per-image loop of common research scripts.

200 real DreamBench JPEGs stand in for generated images, each scored against 2 reference images
of a subject with CLIP-I + CLIP-T + DINO, on full-size architectures (open_clip ViT-B-32, timm
ViT-S/16) with random weights saved in their real on-disk formats. The naive loop decodes,
preprocesses and encodes one image at a time and re-encodes the references for every image.
Each side runs in its own process (so peak memory is its own). On a shared machine a run's speed
drifts by about 15%, so each side runs ``--repeats`` times in the order naive, engine, engine, naive, ...
and the fastest of each is kept (the figures of every run are printed too). Goals: >= 3.5x faster,
the same numbers to 1e-5, under 15% of the engine's wall time in its own work (neither forward
passes nor waiting for decoded images).

    python benchmarks/bench_metrics.py [--n 200] [--repeats 2] [--device cpu] [--threads 2] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

METRICS = ("clip_i", "clip_t", "dino")


def build_models(folder: Path) -> dict[str, Path]:
    """Full-size ViT-B-32 (open_clip local-dir) and ViT-S/16 DINO (timm local-dir), random weights."""
    import open_clip
    import timm
    import torch
    from safetensors.torch import save_file

    from picbench.tiny.metric_models import OPENAI_MEAN, OPENAI_STD

    clip_dir, dino_dir = folder / "clip", folder / "dino"
    if not (clip_dir / "open_clip_model.safetensors").is_file():
        clip_dir.mkdir(parents=True, exist_ok=True)
        cfg = {
            "model_cfg": {**open_clip.get_model_config("ViT-B-32"), "quick_gelu": True},
            "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic", "resize_mode": "shortest"},
        }
        (clip_dir / "open_clip_config.json").write_text(json.dumps(cfg))
        torch.manual_seed(0)
        model = open_clip.create_model(f"local-dir:{clip_dir}", load_weights=False)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(clip_dir / "open_clip_model.safetensors"))
    if not (dino_dir / "model.safetensors").is_file():
        dino_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0)
        keep = ("tag", "input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std", "num_classes", "first_conv", "classifier")
        (dino_dir / "config.json").write_text(
            json.dumps(
                {
                    "architecture": "vit_small_patch16_224",
                    "num_classes": 0,
                    "pretrained_cfg": {k: v for k, v in model.pretrained_cfg.items() if k in keep},
                }
            )
        )
        save_file(model.state_dict(), str(dino_dir / "model.safetensors"))
    return {"clip": clip_dir, "dino": dino_dir}


def build_items(data_dir: Path, n: int):
    """n (sample, generated image) pairs: every DreamBench photo in turn as the generated image,
    scored against two images of a subject chosen in a fixed rotation."""
    from picbench.metrics.decoding import ScoreItem
    from picbench.records import Sample, Subject

    root = data_dir / "dreambench" / "dataset"
    subjects = sorted(p for p in root.iterdir() if p.is_dir())
    photos = sorted(p for s in subjects for p in s.glob("*.jpg"))
    items = []
    for i in range(n):
        subject = subjects[(i * 7) % len(subjects)]
        refs = tuple(str(p.relative_to(data_dir)) for p in sorted(subject.glob("*.jpg"))[:2])
        word = subject.name.split("_")[-1]
        sample = Sample(f"s{i:04d}", f"a {word} in the jungle", 512, 512, "single", (Subject(subject.name, word, refs[:1], refs),))
        items.append(ScoreItem(sample, 0, photos[i % len(photos)]))
    return items


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """CPU seconds this process has used on all its threads: against wall time, how many cores a side kept busy."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_engine(models: dict[str, Path], data_dir: Path, n: int, device: str, threads: int, batch_size: int, out: mp.Queue) -> None:
    from picbench.metrics.engine import MetricEngine

    items = build_items(data_dir, n)
    engine = MetricEngine(
        models="default", device=device, metrics=METRICS, detector=None, weights=models, batch_size=batch_size, num_workers=threads
    )
    _ = engine.clip  # build the models before the clock starts, as the naive loop does (the engine builds them on first use)
    start, cpu = time.perf_counter(), _cpu_s()
    scores = [[s.metrics[m] for m in METRICS] for s in engine.score(items, data_dir)]
    wall, cpu = time.perf_counter() - start, _cpu_s() - cpu
    out.put(
        {
            "wall_s": wall,
            "cpu_s": cpu,
            "forward_s": engine.forward_seconds,
            "data_wait_s": engine.data_wait_seconds,
            "scores": scores,
            "peak_rss_mb": _peak_rss_mb(),
            "reference_encodes": engine.reference_encodes,
        }
    )


def run_naive(models: dict[str, Path], data_dir: Path, n: int, device: str, out: mp.Queue) -> None:
    """One image at a time; references decoded and encoded again for every generated image."""
    import open_clip
    import timm
    import torch
    import torch.nn.functional as F
    from timm.data import create_transform

    from picbench.imaging import load_rgb

    items = build_items(data_dir, n)
    clip, _, clip_pre = open_clip.create_model_and_transforms(f"local-dir:{models['clip']}", device=device)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{models['clip']}")
    dino = timm.create_model(f"local-dir:{models['dino']}", pretrained=True, num_classes=0).eval().to(device)
    dino_pre = create_transform(
        input_size=224, interpolation="bicubic", crop_pct=0.875, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    clip.eval()
    start, cpu = time.perf_counter(), _cpu_s()
    scores = []
    with torch.no_grad():
        for item in items:
            image = load_rgb(item.image_path)
            g_clip = F.normalize(clip.encode_image(clip_pre(image)[None].to(device)), dim=-1)[0]
            g_dino = F.normalize(dino(dino_pre(image)[None].to(device)), dim=-1)[0]
            text = F.normalize(clip.encode_text(tokenizer([item.sample.prompt]).to(device)), dim=-1)[0]
            clip_i, dino_s = [], []
            for rel in item.sample.subjects[0].eval_images:
                ref = load_rgb(data_dir / rel)
                clip_i.append(float(g_clip @ F.normalize(clip.encode_image(clip_pre(ref)[None].to(device)), dim=-1)[0]))
                dino_s.append(float(g_dino @ F.normalize(dino(dino_pre(ref)[None].to(device)), dim=-1)[0]))
            scores.append([sum(clip_i) / len(clip_i), float(g_clip @ text), sum(dino_s) / len(dino_s)])
    out.put({"wall_s": time.perf_counter() - start, "cpu_s": _cpu_s() - cpu, "scores": scores, "peak_rss_mb": _peak_rss_mb()})


def _in_process(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="the engine's decoding threads (num_workers)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side (ABBA order); the fastest of each is kept")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "picbench-bench-models")
    args = parser.parse_args()
    from picbench.paths import find_data_dir

    data_dir = find_data_dir(args.data_dir)
    models = build_models(args.models_dir)
    print(
        f"scoring {args.n} DreamBench JPEGs x 2 references with {', '.join(METRICS)} on {args.device} "
        f"(ViT-B-32 + ViT-S/16, random weights); engine: batch {args.batch_size}, {args.threads} decoding threads",
        file=sys.stderr,
    )
    naive_runs: list[dict] = []
    engine_runs: list[dict] = []
    for r in range(max(1, args.repeats)):
        order = ("naive", "engine") if r % 2 == 0 else ("engine", "naive")
        for side in order:
            if side == "naive":
                naive_runs.append(_in_process(run_naive, models, data_dir, args.n, args.device))
                print(f"naive per-image loop: {naive_runs[-1]['wall_s']:.1f} s", file=sys.stderr)
            else:
                engine_runs.append(_in_process(run_engine, models, data_dir, args.n, args.device, args.threads, args.batch_size))
                print(f"engine: {engine_runs[-1]['wall_s']:.1f} s", file=sys.stderr)
    naive = min(naive_runs, key=lambda run: run["wall_s"])
    engine = min(engine_runs, key=lambda run: run["wall_s"])
    print(
        f"fastest naive per-image loop: {naive['wall_s']:.1f} s ({naive['cpu_s']:.1f} CPU s), peak RSS {naive['peak_rss_mb']:.0f} MB",
        file=sys.stderr,
    )
    outside = 1 - engine["forward_s"] / engine["wall_s"]
    overhead = 1 - (engine["forward_s"] + engine["data_wait_s"]) / engine["wall_s"]  # neither forward nor waiting for decoded images
    diff = max(abs(a - b) for run in engine_runs for ea, na in zip(run["scores"], naive["scores"]) for a, b in zip(ea, na))
    print(
        f"fastest engine: {engine['wall_s']:.1f} s ({engine['cpu_s']:.1f} CPU s; {engine['forward_s']:.1f} s waiting for forward passes, "
        f"{outside:.1%} not), "
        f"{engine['data_wait_s']:.1f} s waiting for decoded images, {overhead:.1%} in the engine's own work; "
        f"{engine['reference_encodes']} reference encodes, peak RSS {engine['peak_rss_mb']:.0f} MB",
        file=sys.stderr,
    )
    print(f"speedup {naive['wall_s'] / engine['wall_s']:.2f}x, max |difference| {diff:.2e}", file=sys.stderr)
    print(
        json.dumps(
            {
                "n_images": args.n,
                "device": args.device,
                "decode_threads": args.threads,
                "batch_size": args.batch_size,
                "naive_s": round(naive["wall_s"], 3),
                "engine_s": round(engine["wall_s"], 3),
                "speedup": round(naive["wall_s"] / engine["wall_s"], 3),
                "repeats": max(1, args.repeats),
                "naive_cpu_s": round(naive["cpu_s"], 3),
                "engine_cpu_s": round(engine["cpu_s"], 3),
                "naive_runs_s": [round(run["wall_s"], 3) for run in naive_runs],
                "engine_runs_s": [round(run["wall_s"], 3) for run in engine_runs],
                "max_abs_diff": diff,
                "engine_forward_s": round(engine["forward_s"], 3),
                "outside_forward_share": round(outside, 4),
                "engine_data_wait_s": round(engine["data_wait_s"], 3),
                "engine_own_work_share": round(overhead, 4),
                "reference_encodes": engine["reference_encodes"],
                "peak_rss_mb_engine": round(engine["peak_rss_mb"], 1),
                "peak_rss_mb_naive": round(naive["peak_rss_mb"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
