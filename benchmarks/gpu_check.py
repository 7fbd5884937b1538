"""One check for one CUDA GPU, under 8 minutes, ending with one JSON line.

(a) VAA attention backends at FLUX scale in bf16 (24 heads, head dim 128, 512 text tokens): a
    64x64 target with 2 references of 32x32, and a 2048 px target (128x128) with 3 references of
    32x32. Unmasked SDPA, SDPA with the dense VAA mask, ``sdpa_lowrank`` (the VAA bias in extra
    head dimensions, padded by the backend so fused kernels apply) and compiled flex VAA: times as
    ratios to unmasked SDPA, forward and forward+backward, peak memory, and the largest error
    against an fp32 dense-mask reference (on the first heads, to bound its memory).
(b) The tiny PositionIC pipeline end to end on CUDA in bf16: finite, the right size, the same
    image for the same seed and another for another seed.
(c) The metric engine's images per second on CUDA with full-size random-weight CLIP ViT-B/32
    and DINO ViT-S/16 (random images; the figure is throughput, not quality).
(d) One training step (PositionIC's flow-matching loss with VAA, LoRA on the attention
    projections, AdamW) of a FLUX-width transformer of reduced depth: time and peak memory;
    "not available" when the trainer's objective cannot be imported.
(e) Parity: the ``uno`` method in bf16 on the device from tiny random weights (a random LoRA in
    UNO's layout, stored in float32), run twice with seed 3407: the same image both times, and
    whether its initial noise is UNO's draw, ``torch.randn(..., dtype=bfloat16, device=device,
    generator=torch.Generator(device).manual_seed(seed))`` (bytedance/UNO @ d305981
    ``uno/flux/sampling.py:28-45``), and whether that differs from picbench's earlier CPU float32
    draw (on CUDA it should; on a CPU the two are identical).

Each part that fails records its error and the others still run; a part not started within
``--budget-s`` (450 s) is skipped and says so. Exit 0 when every part ran, 1
when one failed, 2 without CUDA (with a one-line reason) or for bad arguments.

The GPU machine may be offline and bare (another Python, an older torch, no diffusers, open_clip
or pycocotools). What is missing installs from wheels carried beside this script, and picbench
runs from the checkout without being installed::

    # with network, once (wheels for the GPU machine's Python, here 3.12):
    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \\
        -d benchmarks/gpu_wheels diffusers open_clip_torch ftfy wcwidth scipy sentencepiece protobuf
    # on the GPU machine:
    python benchmarks/gpu_check.py --wheels benchmarks/gpu_wheels
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WHEELS = Path(__file__).resolve().parent / "gpu_wheels"
# import name -> distribution the wheels folder provides
NEEDED = {
    "diffusers": "diffusers",
    "open_clip": "open_clip_torch",
    "ftfy": "ftfy",
    "wcwidth": "wcwidth",
    "scipy": "scipy",
    "sentencepiece": "sentencepiece",
    "google.protobuf": "protobuf",
}
PARTS = ("attention", "pipeline", "metrics", "trainer", "parity")
SCHEMA = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wheels", type=Path, default=DEFAULT_WHEELS, help="folder of wheels for missing packages (default: benchmarks/gpu_wheels)"
    )
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per attention variant")
    parser.add_argument("--metric-images", type=int, default=256, help="images scored by the metric engine")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--device", default="cuda", help="a CUDA device (cuda, cuda:1 ...)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="parts not started within this many seconds are skipped (reported)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or not parts:
        parser.error(f"--parts: unknown {unknown or 'empty'}; choose from {', '.join(PARTS)}")
    if args.reps < 1 or args.metric_images < 1:
        parser.error("--reps and --metric-images must be at least 1")
    args.parts = parts
    return args


def cuda_refusal(device: str) -> str | None:
    """None when ``device`` is a usable CUDA device, else the one-line reason."""
    import torch

    if not device.startswith("cuda"):
        return f"gpu_check needs a CUDA device, got --device {device}"
    if not torch.cuda.is_available():
        return f"no CUDA device: torch {torch.__version__} sees none (torch.cuda.is_available() is False)"
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        return f"{device} does not exist: {torch.cuda.device_count()} CUDA device(s)"
    return None


def missing_packages() -> list[str]:
    def absent(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is None
        except ModuleNotFoundError:  # the parent package of a dotted name is missing
            return True

    return [dist for module, dist in NEEDED.items() if absent(module)]


def install_from_wheels(folder: Path, packages: list[str]) -> None:
    """``pip install --no-index --find-links folder`` for what is missing; never the network."""
    if not packages:
        return
    if not folder.is_dir():
        raise SystemExit(f"missing {', '.join(packages)} and no wheels folder {folder}; fill it as this script's docstring says")
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links", str(folder), *packages]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"installing {', '.join(packages)} from {folder} failed: {(done.stderr or done.stdout).strip().splitlines()[-1]}")
    importlib.invalidate_caches()


def import_checkout() -> None:
    """Make ``picbench`` (with ``picbench.adapters`` and ``picbench.reference_impl``) importable
    from this checkout when it is not installed: the repository root joins the package's path,
    which is where those two subpackages live (pyproject's package-dir)."""
    try:
        import picbench.reference_impl  # noqa: F401

        return
    except ImportError:
        pass
    sys.modules.pop("picbench", None)
    sys.path.insert(0, str(REPO))
    import picbench

    if str(REPO) not in picbench.__path__:
        picbench.__path__.append(str(REPO))
    importlib.import_module("picbench.reference_impl")


def result_line(device: dict[str, Any], parts: dict[str, Any], seconds: float) -> str:
    """The one JSON line the script ends with."""
    ok = all("error" not in v for v in parts.values())
    return json.dumps({"gpu_check": SCHEMA, "ok": ok, "seconds": round(seconds, 1), "device": device, **parts}, sort_keys=True)


def guarded(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """A part's figures, or its error: one failing part never hides the others."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported in the JSON line
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}


# -- (a) attention -------------------------------------------------------------------------------


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: Any, reps: int) -> float:
    """Median seconds of ``reps`` calls after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _peak_mb(fn: Callable[[], Any], device: Any) -> float | None:
    """Peak CUDA memory one call adds (None off CUDA)."""
    import torch

    if torch.device(device).type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 1)


def attention_case(
    target_hw: tuple[int, int],
    ref_hws: tuple[tuple[int, int], ...],
    boxes: list,
    device: Any,
    reps: int,
    heads: int = 24,
    head_dim: int = 128,
    ref_heads: int = 2,
) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from picbench.reference_impl import TokenLayout, volume_weights
    from picbench.reference_impl.attention import FlexAttention, LowRankSdpaAttention, SdpaAttention

    layout = TokenLayout(512, target_hw, ref_hws)
    weights = volume_weights(boxes, list(range(len(boxes))), layout.target_hw).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, heads, layout.length, head_dim, generator=gen, device=device, dtype=torch.bfloat16) for _ in range(3))
    backends = {"sdpa": SdpaAttention(), "sdpa_lowrank": LowRankSdpaAttention(), "flex": FlexAttention()}
    plans = {name: b.prepare(layout, weights, device=device, dtype=torch.bfloat16) for name, b in backends.items()}
    calls: dict[str, Callable[..., Any]] = {"unmasked_sdpa": lambda a, b, c: F.scaled_dot_product_attention(a, b, c)}
    calls.update({name: (lambda a, b, c, _n=name: backends[_n](a, b, c, plans[_n])) for name in backends})

    reference_mask = SdpaAttention().prepare(layout, weights, device=device, dtype=torch.float32)
    qr, kr, vr = (t[:, :ref_heads].float() for t in (q, k, v))
    reference = F.scaled_dot_product_attention(qr, kr, vr, attn_mask=reference_mask)
    del reference_mask

    out: dict[str, Any] = {"seq_len": layout.length, "target": list(target_hw), "refs": [list(r) for r in ref_hws]}
    fwd = {name: _timed(lambda f=f: f(q, k, v), device, reps) for name, f in calls.items()}
    grads = [t.detach().requires_grad_(True) for t in (q, k, v)]

    def backward(f: Callable[..., Any]) -> None:
        f(*grads).float().sum().backward()
        for g in grads:
            g.grad = None

    bwd = {name: _timed(lambda f=f: backward(f), device, reps) for name, f in calls.items()}
    for name, f in calls.items():
        entry: dict[str, Any] = {
            "fwd_ms": round(fwd[name] * 1e3, 3),
            "fwd_ratio": round(fwd[name] / fwd["unmasked_sdpa"], 3),
            "fwd_bwd_ms": round(bwd[name] * 1e3, 3),
            "fwd_bwd_ratio": round(bwd[name] / bwd["unmasked_sdpa"], 3),
            "peak_fwd_mb": _peak_mb(lambda f=f: f(q, k, v), device),
            "peak_fwd_bwd_mb": _peak_mb(lambda f=f: backward(f), device),
        }
        if name != "unmasked_sdpa":
            entry["max_err_vs_fp32_dense"] = float((f(q, k, v)[:, :ref_heads].float() - reference).abs().max())
        out[name] = entry
    out["flex_blocks_skipped"] = round(plans["flex"].skipped_fraction, 4)
    return out


def check_attention(device: Any, reps: int) -> dict[str, Any]:
    boxes_2 = [(0.05, 0.05, 0.55, 0.55), (0.45, 0.40, 0.95, 0.90)]
    boxes_3 = boxes_2 + [(0.10, 0.55, 0.60, 1.00)]
    return {
        "1024px_2refs": attention_case((64, 64), ((32, 32), (32, 32)), boxes_2, device, reps),
        "2048px_3refs": attention_case((128, 128), ((32, 32),) * 3, boxes_3, device, max(1, reps // 2)),
    }


# -- (b) tiny pipeline ---------------------------------------------------------------------------


def check_pipeline(device: Any) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    from picbench.reference_impl.pipeline import PositionICPipeline
    from picbench.tiny.flux import tiny_components

    pipe = PositionICPipeline(**tiny_components(seed=0)).to(device, torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    refs = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 40, 3), dtype=np.uint8)) for i in range(2)]
    boxes, depths = [(0.05, 0.05, 0.55, 0.6), (0.4, 0.35, 0.95, 0.95)], [0, 1]

    def run(seed: int) -> np.ndarray:
        latents = pipe(
            "a dog and a cat",
            refs,
            boxes,
            depths,
            height=64,
            width=96,
            num_inference_steps=2,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="latent",
        ).images
        image = pipe(
            "a dog and a cat",
            refs,
            boxes,
            depths,
            height=64,
            width=96,
            num_inference_steps=2,
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images[0]
        if not torch.isfinite(latents.float()).all():
            raise AssertionError(f"non-finite latents for seed {seed}")
        if image.size != (96, 64):
            raise AssertionError(f"image is {image.size}, expected (96, 64)")
        return np.asarray(image)

    start = time.perf_counter()
    first, again, other = run(0), run(0), run(1)
    return {
        "finite": True,
        "size": [96, 64],
        "deterministic": bool(np.array_equal(first, again)),
        "seed_changes_image": bool(not np.array_equal(first, other)),
        "seconds": round(time.perf_counter() - start, 2),
    }


# -- (c) metric engine ---------------------------------------------------------------------------


def check_metrics(device: Any, n: int) -> dict[str, Any]:
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_metrics import build_models

    from picbench.metrics.decoding import ScoreItem
    from picbench.metrics.engine import MetricEngine
    from picbench.records import Sample, Subject

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = build_models(root / "models")
        rng = np.random.default_rng(0)
        (root / "data").mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(root / "data" / f"ref{i}.jpg")
        items = []
        for i in range(n):
            path = root / f"gen{i}.jpg"
            Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path)
            refs = (f"ref{i % 4}.jpg", f"ref{(i + 1) % 4}.jpg")
            items.append(
                ScoreItem(Sample(f"s{i}", "a dog in the jungle", 512, 512, "single", (Subject("dog", "dog", refs[:1], refs),)), 0, path)
            )
        engine = MetricEngine(
            models="default", metrics=["clip_i", "clip_t", "dino"], detector=None, weights=models, device=str(device), batch_size=64
        )
        list(engine.score(items[: min(8, n)], root / "data"))  # warm-up: weights on the device, kernels chosen
        _sync(device)
        start = time.perf_counter()
        scores = list(engine.score(items, root / "data"))
        _sync(device)
        seconds = time.perf_counter() - start
    if any(s.failures for s in scores):
        raise AssertionError(f"scoring failed: {scores[0].failures}")
    return {
        "images": n,
        "seconds": round(seconds, 2),
        "images_per_s": round(n / seconds, 1),
        "models": "ViT-B/32 + ViT-S/16, random weights",
    }


# -- (d) trainer ---------------------------------------------------------------------------------


def check_trainer(device: Any, heads: int = 24) -> dict[str, Any]:
    try:
        from picbench.reference_impl.conditioning import build_conditioning
        from picbench.reference_impl.training.objective import ModelInputs, flow_matching_loss
        from picbench.reference_impl.vaa import VAASettings
    except ImportError as exc:
        return {"status": "not available", "reason": f"{type(exc).__name__}: {exc}"}
    import torch
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig

    from picbench.reference_impl.processors import set_positionic_processors

    torch.manual_seed(0)
    # FLUX.1-dev's widths (24 heads x 128, T5 4096, CLIP 768), 1 double- and 2 single-stream blocks
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=128,
        num_attention_heads=heads,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    ).to(device, torch.bfloat16)
    set_positionic_processors(transformer)
    transformer.requires_grad_(False)
    transformer.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    target_hw, ref_hws = (32, 32), ((16, 16), (16, 16))  # 512 px, references of 256 px
    layout = ([(0.05, 0.05, 0.55, 0.6), (0.4, 0.35, 0.95, 0.95)], [0, 1])
    cond = build_conditioning(
        512, target_hw, ref_hws, [layout], vaa=VAASettings(attention_backend="auto"), device=device, dtype=torch.bfloat16
    )
    n_target, n_refs = target_hw[0] * target_hw[1], sum(h * w for h, w in ref_hws)

    def inputs() -> ModelInputs:
        rand = lambda *shape: torch.randn(*shape, device=device, dtype=torch.bfloat16)  # noqa: E731
        return ModelInputs(
            rand(1, n_target, 64),
            rand(1, n_refs, 64),
            rand(1, n_target, 64),
            torch.rand(1, device=device),
            rand(1, 512, 4096),
            rand(1, 768),
            torch.zeros(512, 3, device=device),
            cond,
            torch.full([1], 3.5, device=device),
        )

    def step() -> float:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            loss = flow_matching_loss(transformer, inputs())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()
    seconds = _timed(step, device, 3)
    peak = _peak_mb(step, device)
    return {
        "status": "ok",
        "step_s": round(seconds, 4),
        "peak_mb": peak,
        "model": f"FLUX width ({heads} heads x 128), 1 double + 2 single blocks, LoRA r16, 512 px + 2 refs",
        "trainable_params": sum(p.numel() for p in params),
    }


# -- (e) parity with UNO's draw ---------------------------------------------------------------------


def check_uno_parity(device: Any, seed: int = 3407) -> dict[str, Any]:
    """The ``uno`` method (tiny weights, bf16 transformer, float32 VAE) on ``device``, twice with one seed."""
    import numpy as np
    import torch
    from PIL import Image

    from picbench.adapters.uno import UnoMethod
    from picbench.records import Sample, Subject

    class Bf16Uno(UnoMethod):
        """`uno` with its tiny weights in bf16, as the real ones run on CUDA (smoke runs are float32)."""

        def _base_pipeline(self, cls: Any) -> Any:
            return super()._base_pipeline(cls).to(dtype=torch.bfloat16)

    method = Bf16Uno(models="tiny", device=str(device), params={"steps": 2, "ref_long_side": 32})
    pipe = method.load()
    first_inputs: list[torch.Tensor] = []

    def record(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        if not first_inputs:
            first_inputs.append(kwargs["hidden_states"])

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(2):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(root / f"ref{i}.png")
        subjects = tuple(Subject(f"s{i}", "thing", (f"ref{i}.png",)) for i in range(2))
        sample = Sample("parity-0", "a dog and a cat", 64, 64, "multi", subjects)
        start = time.perf_counter()
        hook = pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
        try:
            images = [np.asarray(method.generate([sample], seed, root)[0]) for _ in range(2)]
        finally:
            hook.remove()
    shape = (1, pipe.transformer.config.in_channels // 4, 2 * 4, 2 * 4)  # 64 px: 4x4 tokens
    unos = torch.randn(shape, device=device, dtype=torch.bfloat16, generator=torch.Generator(device=device).manual_seed(seed))
    cpu_float32 = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)).to(device, torch.bfloat16)
    drawn = first_inputs[0][:, : 4 * 4]
    return {
        "pipeline_dtype": str(pipe.transformer.dtype).removeprefix("torch."),
        "same_image_same_seed": bool(np.array_equal(images[0], images[1])),
        "noise_matches_uno_device_draw": bool(torch.equal(drawn, pipe._pack_latents(unos, *shape))),
        "uno_draw_differs_from_cpu_float32_draw": bool(not torch.equal(unos, cpu_float32)),
        "seconds": round(time.perf_counter() - start, 2),
    }


def run_parts(
    calls: dict[str, Callable[[], dict[str, Any]]], names: list[str], budget_s: float, *, after_each: Callable[[], Any] = lambda: None
) -> dict[str, Any]:
    """Each named part in turn, guarded; once ``budget_s`` is spent the rest are skipped, saying so."""
    start = time.perf_counter()
    parts: dict[str, Any] = {}
    for name in names:
        part_start = time.perf_counter()
        if part_start - start > budget_s:
            parts[name] = {"error": f"skipped: {part_start - start:.0f} s of the {budget_s:.0f} s budget spent"}
            continue
        parts[name] = guarded(calls[name])
        print(
            f"{name}: {'error: ' + parts[name]['error'] if 'error' in parts[name] else 'done'} in {time.perf_counter() - part_start:.1f} s"
        )
        after_each()
    return parts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = cuda_refusal(args.device)
    if reason is not None:
        print(f"gpu_check: {reason}", file=sys.stderr)
        return 2
    install_from_wheels(args.wheels, missing_packages())
    import_checkout()
    import torch

    device = torch.device(args.device)
    info = {
        "name": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "cuda": torch.version.cuda,
    }
    print(f"gpu_check on {info['name']}, torch {info['torch']}, Python {info['python']}")
    start = time.perf_counter()
    run = {
        "attention": lambda: check_attention(device, args.reps),
        "pipeline": lambda: check_pipeline(device),
        "metrics": lambda: check_metrics(device, args.metric_images),
        "trainer": lambda: check_trainer(device),
        "parity": lambda: check_uno_parity(device),
    }
    parts = run_parts(run, args.parts, args.budget_s, after_each=torch.cuda.empty_cache)
    line = result_line(info, parts, time.perf_counter() - start)
    print(line)
    return 0 if json.loads(line)["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
