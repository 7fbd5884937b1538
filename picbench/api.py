"""The Python front door (docs/python.md): :func:`evaluate` runs a method on a bench exactly as
``picbench run`` does (same run folder, same store, same results.json) and returns an
:class:`Evaluation`; :func:`load_results` reads any run folder back into one. An Evaluation holds
the :class:`~picbench.results.RunResult` the CLI writes and gives the aggregates and the
per-sample scores as pandas DataFrames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from picbench.results import RESULTS_FILE, RunResult, iter_sample_scores, load_result

if TYPE_CHECKING:
    import pandas as pd

    from picbench.runner import Progress


@dataclass(frozen=True)
class Evaluation:
    """One run: ``result`` is the object written to ``folder``/results.json."""

    result: RunResult
    folder: Path

    def results_frame(self) -> pd.DataFrame:
        """One row per aggregate (index ``metric``, e.g. ``clip_i``, ``clip_i.multi``, ``ap``):
        ``value``, ``ci_low`` and ``ci_high`` (the bootstrap 95% interval; NaN where there is
        none) and ``higher_is_better``."""
        import pandas as pd

        rows = [
            {
                "metric": key,
                "value": value,
                "ci_low": self.result.intervals[key][0] if key in self.result.intervals else None,
                "ci_high": self.result.intervals[key][1] if key in self.result.intervals else None,
                "higher_is_better": self.result.better_high(key),
            }
            for key, value in sorted(self.result.metrics.items())
        ]
        columns = ["metric", "value", "ci_low", "ci_high", "higher_is_better"]
        return pd.DataFrame(rows, columns=columns).astype({"value": float, "ci_low": float, "ci_high": float}).set_index("metric")

    def samples_frame(self) -> pd.DataFrame:
        """One row per (sample, seed) of samples.jsonl: ``sample_id``, ``seed``, one column per
        item metric (NaN where it does not apply or failed), ``failures`` (joined with "; ",
        empty when none) and ``image`` (the path of the scored image inside the run folder)."""
        import pandas as pd

        rows: list[dict[str, Any]] = []
        for score, image in iter_sample_scores(self.folder):
            rows.append(
                {"sample_id": score.sample_id, "seed": score.seed, **score.metrics, "failures": "; ".join(score.failures), "image": image}
            )
        frame = pd.DataFrame(rows)
        metric_columns = [c for c in frame.columns if c not in ("sample_id", "seed", "failures", "image")]
        return frame.astype(dict.fromkeys(metric_columns, float))


def evaluate(
    method: str,
    bench: str | Path,
    *,
    out: str | Path | None = None,
    seeds: Sequence[int] = (0,),
    limit: int | None = None,
    device: str = "cpu",
    models: Literal["default", "tiny"] = "default",
    data_dir: str | Path | None = None,
    detector: str | None = "default",
    metrics: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
    weights: Mapping[str, str | Path] | None = None,
    weights_dir: str | Path | None = None,
    batch_size: int = 4,
    retry_failed: bool = False,
    progress: Progress | None = None,
) -> Evaluation:
    """Run (or resume) ``method`` on ``bench`` and return the run, as ``picbench run --method
    METHOD --bench BENCH ...`` with the same options: ``out`` defaults to
    ``runs/METHOD__BENCH``, a rerun recomputes nothing finished, ``models="tiny"`` is a smoke run
    (``result.smoke``), ``detector="default"`` is the bench's own (:func:`picbench.benches.default_detector`), ``detector=None`` computes no box metric, ``metrics`` names metrics
    (default: every default metric). Raises :class:`~picbench.errors.PicbenchError` where the CLI
    exits 2. Under ``torchrun`` only rank 0 writes results.json: call it there."""
    from picbench.runner import RunConfig, default_out, run

    config = RunConfig(
        method=method,
        bench=str(bench),
        out=Path(out) if out is not None else default_out(method, str(bench)),
        seeds=tuple(seeds),
        limit=limit,
        device=device,
        models=models,
        data_dir=Path(data_dir) if data_dir is not None else None,
        detector=detector,
        metrics=tuple(metrics) if metrics is not None else None,
        params=dict(params or {}),
        weights={role: str(folder) for role, folder in (weights or {}).items()},
        weights_dir=Path(weights_dir) if weights_dir is not None else None,
        batch_size=batch_size,
        retry_failed=retry_failed,
    )
    run(config, progress)
    return load_results(config.out)  # what results.json holds, read back: equal to what any reader of the folder gets


def load_results(path: str | Path) -> Evaluation:
    """The run in a run folder (or the folder of a results.json path), read back and checked."""
    path = Path(path)
    folder = path.parent if path.name == RESULTS_FILE and path.is_file() else path
    return Evaluation(load_result(folder), folder)
