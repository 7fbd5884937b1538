"""One joint-attention call at a FLUX-like PositionIC layout: what VAA costs on each backend.

Layout: 512 text tokens, a 64x64 target token grid (1024 px), 2 references of 20x20 tokens,
two boxes of about a quarter of the image each that overlap. Heads are scaled
down on CPU (1 head of FLUX's size 128 instead of 24) so a call takes about a second (the ratios, not the absolute times, are the point).
Measured: unmasked SDPA, SDPA with the dense VAA mask, SDPA with the low-rank VAA bias, VAA FlexAttention (compile time apart),
unmasked FlexAttention, and `auto`; the fraction of blocks skipped; mask build times; the
memory the mask structures take here and at 2048x2048 (128x128 tokens) with 3 references.
CPU runs in fp32; CUDA in bf16. Ends with one JSON line.

    python benchmarks/bench_attention.py [--device cpu|cuda] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable

import torch

from picbench.reference_impl import TokenLayout, get_backend, volume_weights
from picbench.reference_impl.attention import FlexAttention, FlexPlan, LowRankSdpaAttention, SdpaAttention

BOXES_2 = [(0.05, 0.05, 0.55, 0.55), (0.45, 0.40, 0.95, 0.90)]
BOXES_3 = BOXES_2 + [(0.10, 0.55, 0.60, 1.00)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict[str, Callable[[], object]], device: torch.device, reps: int) -> dict[str, list[float]]:
    """Seconds of each call, the variants interleaved after one warm-up each, so a load change on a
    shared machine hits every variant alike instead of skewing one ratio. Each rep runs them in a
    fresh (seeded) order: in a fixed order the call after a compiled flex kernel always paid for
    its lingering OpenMP threads (docs/benchmarks.md, "Figures behind defaults")."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    order = random.Random(0)
    for _ in range(reps):
        for name in order.sample(list(fns), len(fns)):
            fn = fns[name]
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def first_call(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def peak_call_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak CUDA memory (MB) one call allocates beyond what is already held; None on CPU."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return round((torch.cuda.max_memory_allocated(device) - base) / 2**20, 2)


def plan_bytes(plan: FlexPlan) -> int:
    """Bytes of everything the flex path keeps per layout: BlockMask indices and the lookup tensors."""
    tensors = [t for t in plan.block_mask.as_tuple() if isinstance(t, torch.Tensor)]
    tensors += [c.cell_contents for c in plan.score_mod.__closure__ if isinstance(c.cell_contents, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def mask_structures(layout: TokenLayout, weights: torch.Tensor, device: torch.device, dtype: torch.dtype) -> dict:
    """Build time and size of the dense mask and of the flex plan for one layout."""
    start = time.perf_counter()
    dense = SdpaAttention().prepare(layout, weights, device=device, dtype=dtype)
    sync(device)
    dense_s = time.perf_counter() - start
    dense_bytes = dense.numel() * dense.element_size()
    del dense
    start = time.perf_counter()
    low_rank = LowRankSdpaAttention().prepare(layout, weights, device=device, dtype=dtype)
    sync(device)
    low_rank_s = time.perf_counter() - start
    low_rank_bytes = sum(t.numel() * t.element_size() for t in vars(low_rank).values())
    start = time.perf_counter()
    plan = FlexAttention().prepare(layout, weights, device=device, dtype=dtype)
    sync(device)
    flex_s = time.perf_counter() - start
    return {
        "seq_len": layout.length,
        "dense_mask_build_s": round(dense_s, 4),
        "dense_mask_mb": round(dense_bytes / 2**20, 2),
        "lowrank_bias_build_s": round(low_rank_s, 4),
        "lowrank_bias_mb": round(low_rank_bytes / 2**20, 3),
        "flex_plan_build_s": round(flex_s, 4),
        "flex_plan_mb": round(plan_bytes(plan) / 2**20, 3),
        "blocks_skipped": round(plan.skipped_fraction, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--heads", type=int, default=None, help="default: 1 on CPU, 24 (FLUX) on CUDA")
    parser.add_argument("--head-dim", type=int, default=128, help="default: 128, FLUX's head size")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    dtype = torch.bfloat16 if on_cuda else torch.float32
    heads = args.heads or (24 if on_cuda else 1)
    head_dim = args.head_dim

    layout = TokenLayout(512, (64, 64), ((20, 20), (20, 20)))
    weights = volume_weights(BOXES_2, [0, 1], layout.target_hw).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, heads, layout.length, head_dim, generator=gen, device=device, dtype=dtype) for _ in range(3))
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if on_cuda else 'cpu'}), {dtype}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"layout: text 512 + target 64x64 + 2 refs 20x20 = {layout.length} tokens; B=1, H={heads}, D={head_dim}")

    sdpa, low_rank, flex = SdpaAttention(), LowRankSdpaAttention(), FlexAttention()
    dense_mask = sdpa.prepare(layout, weights, device=device, dtype=dtype)
    low_rank_bias = low_rank.prepare(layout, weights, device=device, dtype=dtype)
    flex_plan = flex.prepare(layout, weights, device=device, dtype=dtype)
    flex_plain = flex.prepare(layout, None, device=device, dtype=dtype)
    auto = get_backend("auto", device)
    auto_plan = auto.prepare(layout, weights, device=device, dtype=dtype)

    compile_vaa_s = first_call(lambda: flex(q, k, v, flex_plan), device)
    compile_plain_s = first_call(lambda: flex(q, k, v, flex_plain), device)
    samples = timed(
        {
            "sdpa_unmasked": lambda: sdpa(q, k, v, None),
            "sdpa_vaa": lambda: sdpa(q, k, v, dense_mask),  # noqa: F821 (called before the del below)
            "sdpa_lowrank_vaa": lambda: low_rank(q, k, v, low_rank_bias),
            "flex_vaa": lambda: flex(q, k, v, flex_plan),
            "flex_unmasked": lambda: flex(q, k, v, flex_plain),
            "auto_vaa": lambda: auto(q, k, v, auto_plan),
        },
        device,
        args.reps,
    )
    times = {name: statistics.median(t) for name, t in samples.items()}

    def paired_ratio(name: str, baseline: str) -> float:
        """Median over reps of the per-rep ratio: each rep's calls run back to back, so on a shared
        machine both sides of a ratio see nearly the same load, which a ratio of medians does not."""
        return statistics.median(a / b for a, b in zip(samples[name], samples[baseline]))

    peaks = {
        "sdpa_unmasked": peak_call_mb(lambda: sdpa(q, k, v, None), device),
        "sdpa_vaa": peak_call_mb(lambda: sdpa(q, k, v, dense_mask), device),  # noqa: F821 (called before the del below)
        "sdpa_lowrank_vaa": peak_call_mb(lambda: low_rank(q, k, v, low_rank_bias), device),
        "flex_vaa": peak_call_mb(lambda: flex(q, k, v, flex_plan), device),
    }
    dense_out = sdpa(q, k, v, dense_mask).float()
    err = {
        "flex_vs_sdpa": (flex(q, k, v, flex_plan).float() - dense_out).abs().max().item(),
        "lowrank_vs_sdpa": (low_rank(q, k, v, low_rank_bias).float() - dense_out).abs().max().item(),
    }
    for name, seconds in times.items():
        print(
            f"  {name:16s} median {seconds * 1e3:9.2f} ms (min {min(samples[name]) * 1e3:9.2f})   "
            f"{paired_ratio(name, 'sdpa_unmasked'):.3f}x unmasked SDPA"
        )
    print(f"  flex compile (first call): VAA {compile_vaa_s:.1f} s, unmasked {compile_plain_s:.1f} s")
    print(f"  auto -> {auto.name}; max |flex - sdpa| = {err['flex_vs_sdpa']:.2e}, max |sdpa_lowrank - sdpa| = {err['lowrank_vs_sdpa']:.2e}")

    del dense_mask
    structures = {"flux_1024": mask_structures(layout, weights, device, dtype)}
    big = TokenLayout(512, (128, 128), ((20, 20),) * 3)
    big_weights = volume_weights(BOXES_3, [0, 1, 2], big.target_hw).to(device)
    structures["flux_2048_3refs"] = mask_structures(big, big_weights, device, dtype)
    for name, s in structures.items():
        print(
            f"  {name}: L={s['seq_len']}, dense mask {s['dense_mask_mb']} MB built in {s['dense_mask_build_s']} s; "
            f"low-rank bias {s['lowrank_bias_mb']} MB in {s['lowrank_bias_build_s']} s; "
            f"flex plan {s['flex_plan_mb']} MB built in {s['flex_plan_build_s']} s; blocks skipped {s['blocks_skipped']:.1%}"
        )

    ratios = {
        "sdpa_vaa_over_sdpa": paired_ratio("sdpa_vaa", "sdpa_unmasked"),
        "sdpa_lowrank_vaa_over_sdpa": paired_ratio("sdpa_lowrank_vaa", "sdpa_unmasked"),
        "auto_over_sdpa": paired_ratio("auto_vaa", "sdpa_unmasked"),
        "flex_vaa_over_flex_unmasked": paired_ratio("flex_vaa", "flex_unmasked"),
        "flex_vaa_over_sdpa": paired_ratio("flex_vaa", "sdpa_unmasked"),
    }
    goals = {
        "auto_le_1.10x_sdpa": ratios["auto_over_sdpa"] <= 1.10,
        "flex_vaa_le_1.3x_flex_unmasked": ratios["flex_vaa_over_flex_unmasked"] <= 1.3,
    }
    if on_cuda:
        goals["flex_vaa_le_unmasked_sdpa"] = ratios["flex_vaa_over_sdpa"] <= 1.0
    print("  goals: " + ", ".join(f"{g} {'met' if ok else 'MISSED'}" for g, ok in goals.items()))
    print(
        json.dumps(
            {
                "bench": "attention",
                "device": str(device),
                "reps": args.reps,
                "dtype": str(dtype).replace("torch.", ""),
                "heads": heads,
                "head_dim": head_dim,
                "seq_len": layout.length,
                "auto_backend": auto.name,
                "ms_median": {n: round(s * 1e3, 3) for n, s in times.items()},
                "ms_min": {n: round(min(t) * 1e3, 3) for n, t in samples.items()},
                "ratios": {n: round(r, 3) for n, r in ratios.items()},
                "compile_s": {"flex_vaa": round(compile_vaa_s, 2), "flex_unmasked": round(compile_plain_s, 2)},
                "call_peak_mb_cuda": peaks,
                "max_abs_diff": err,
                "structures": structures,
                "goals": goals,
            }
        )
    )


if __name__ == "__main__":
    main()
