"""Bootstrap intervals and the paired comparison: seeded (the same run gives the same interval),
narrowing with more samples, `picbench compare` of a run with itself gives 0 and p = 1, a shifted
metric gives a small p, and `regress --significance` counts only significant changes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from run_bench_helpers import PROTOCOL
from typer.testing import CliRunner

from picbench.cli import app
from picbench.coverage import measure
from picbench.metrics.bootstrap import mean_intervals, paired_bootstrap, resample_weights
from picbench.records import Sample, Score, Subject, SubjectScore
from picbench.results import RunResult, save_result

runner = CliRunner()


def scores(n_samples: int, seeds: int = 2, shift: float = 0.0, noise: float = 0.05, rng_seed: int = 1) -> list[Score]:
    rng = np.random.default_rng(rng_seed)
    out = []
    for i in range(n_samples):
        base = rng.uniform(0.5, 0.9)
        subjects = (SubjectScore("a", {}),) if i % 2 == 0 else (SubjectScore("a", {}), SubjectScore("b", {}))
        for seed in range(seeds):
            out.append(Score(f"s{i}", seed, {"clip_i": base + shift + rng.normal(0, noise), "missing": float(i % 3 == 0)}, subjects))
    return out


def samples_for(scored: list[Score]) -> dict[str, Sample]:
    found = {}
    for sc in scored:
        n = len(sc.subjects)
        subs = tuple(Subject(f"x{k}", "dog", ("a.jpg",)) for k in range(n))
        found[sc.sample_id] = Sample(sc.sample_id, "p", 64, 64, "single" if n == 1 else "multi", subs)
    return found


def test_nested_resampling_draws_samples_then_seeds_within_them():
    groups = [[0, 1, 2], [3, 4, 5]]
    weights = resample_weights(groups, 6, 500, seed=3)
    assert weights.shape == (500, 6) and np.all(weights.sum(axis=1) == 6)  # two samples drawn, three seeds inside each
    per_sample = np.stack([weights[:, :3].sum(axis=1), weights[:, 3:].sum(axis=1)], axis=1)
    assert set(np.unique(per_sample)) <= {0.0, 3.0, 6.0}  # a drawn sample brings all its seed slots
    assert np.array_equal(weights, resample_weights(groups, 6, 500, seed=3))


def test_intervals_are_seeded_cover_the_mean_and_narrow_with_more_samples():
    small, large = scores(20), scores(400)
    a, b = mean_intervals(small, samples_for(small), ["clip_i"]), mean_intervals(small, samples_for(small), ["clip_i"])
    assert a == b  # the same run gives the same interval
    mean = np.mean([s.metrics["clip_i"] for s in small])
    assert a["clip_i"][0] < mean < a["clip_i"][1]
    assert {"clip_i.single", "clip_i.multi"} <= set(a)
    wide = a["clip_i"][1] - a["clip_i"][0]
    narrow = mean_intervals(large, samples_for(large), ["clip_i"])["clip_i"]
    assert narrow[1] - narrow[0] < wide / 2


def test_paired_bootstrap_of_a_run_with_itself_and_with_a_shifted_run():
    a = scores(30)
    same = paired_bootstrap(a, a, ["clip_i"])[0]
    assert same.difference == 0.0 and same.p_value == 1.0 and same.n_items == 60
    shifted = [replace(s, metrics={**s.metrics, "clip_i": s.metrics["clip_i"] - 0.03}) for s in a]
    d = paired_bootstrap(a, shifted, ["clip_i", "clip_i.multi"])
    assert d[0].difference == pytest.approx(0.03) and d[0].p_value < 0.01 and d[0].ci_low > 0
    assert d[1].metric == "clip_i.multi" and d[1].n_items == 30


def write_run(folder: Path, scored: list[Score], method: str = "m") -> Path:
    folder.mkdir(parents=True)
    (folder / "samples.jsonl").write_text("".join(json.dumps({**s.to_dict(), "image": None}) + "\n" for s in scored))
    means = {k: float(np.mean([s.metrics[k] for s in scored])) for k in ("clip_i", "missing")}
    save_result(
        RunResult(
            method,
            "1",
            {},
            "b",
            "1",
            "h",
            (0, 1),
            means,
            {"n_items": len(scored)},
            False,
            higher_is_better={"clip_i": True, "missing": False},
            coverage=measure(("multi", True, bool(s.failures)) for s in scored),
            protocol=PROTOCOL,
        ),
        folder,
    )
    return folder


def test_compare_cli_shows_difference_interval_and_p(tmp_path: Path):
    a = scores(30)
    run_a = write_run(tmp_path / "a", a, "alpha")
    run_b = write_run(tmp_path / "b", [replace(s, metrics={**s.metrics, "clip_i": s.metrics["clip_i"] - 0.03}) for s in a], "beta")
    itself = runner.invoke(app, ["compare", str(run_a), str(run_a)])
    assert itself.exit_code == 0, itself.output
    row = next(line for line in itself.output.splitlines() if line.strip("│ ").startswith("clip_i "))
    assert "+0.0000" in row and "1.000" in row
    other = runner.invoke(app, ["compare", str(run_a), str(run_b), "--metrics", "clip_i,missing"])
    assert other.exit_code == 0, other.output
    row = next(line for line in other.output.splitlines() if line.strip("│ ").startswith("clip_i "))
    assert "+0.0300" in row and "0.001" in row
    assert "lower" in next(line for line in other.output.splitlines() if line.strip("│ ").startswith("missing"))
    nothing = runner.invoke(app, ["compare", str(run_a), str(tmp_path / "nowhere")])
    assert nothing.exit_code == 2


def test_regress_with_significance_counts_only_significant_falls(tmp_path: Path):
    base = scores(40)
    baseline = write_run(tmp_path / "base", base)
    noisy = write_run(tmp_path / "noisy", scores(40, rng_seed=7, noise=0.2), "m")  # other noise: means differ by chance
    fell = write_run(tmp_path / "fell", [replace(s, metrics={**s.metrics, "clip_i": s.metrics["clip_i"] - 0.05}) for s in base], "m")
    strict = runner.invoke(app, ["regress", str(fell), "-b", str(baseline), "--significance", "0.05"])
    assert strict.exit_code == 1 and "regression: 1 of 2" in strict.output and "0.001" in strict.output, strict.output  # p shown
    data = json.loads((noisy / "results.json").read_text())
    data["metrics"]["clip_i"] = json.loads((baseline / "results.json").read_text())["metrics"]["clip_i"] - 0.02
    (noisy / "results.json").write_text(json.dumps(data))
    plain = runner.invoke(app, ["regress", str(noisy), "-b", str(baseline), "--tolerance", "0.01"])
    assert plain.exit_code == 1  # beyond the tolerance ...
    tested = runner.invoke(app, ["regress", str(noisy), "-b", str(baseline), "--tolerance", "0.01", "--significance", "0.05"])
    assert tested.exit_code == 0, tested.output  # ... but not significant: not a regression, and said so
    assert "not significant" in tested.output
    csv = tmp_path / "board.csv"
    assert runner.invoke(app, ["leaderboard", "export", str(baseline), "--out", str(csv)]).exit_code == 0
    refused = runner.invoke(app, ["regress", str(fell), "-b", str(csv), "--significance", "0.05"])
    assert refused.exit_code == 2 and "per-sample scores" in refused.output
