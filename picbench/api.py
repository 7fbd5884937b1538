"""The Python front door (docs/python.md): :func:`evaluate` runs a method on a bench exactly as
``picbench run`` does (same run folder, same store, same results.json) and returns an
:class:`Evaluation`; :func:`load_results` reads any run folder back into one. An Evaluation holds
the :class:`~picbench.results.RunResult` the CLI writes and gives the aggregates and the
per-sample scores as pandas DataFrames.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picbench.errors import PicbenchError
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
    method: str, bench: str | Path, *, out: str | Path | None = None, progress: Progress | None = None, **options: Any
) -> Evaluation:
    """Run (or resume) ``method`` on ``bench`` and return the run, as ``picbench run --method
    METHOD --bench BENCH ...``. ``options`` are :class:`~picbench.runner.RunConfig`'s fields, the
    CLI's options by their Python names: ``seeds``, ``limit``, ``split``, ``samples`` (ids), ``device``, ``models`` ("tiny": a
    smoke run, ``result.smoke``), ``data_dir``, ``detector`` (None: no box metrics; default the
    bench's own), ``metrics`` (names; default every default metric), ``params``, ``weights``,
    ``weights_dir``, ``batch_size``, ``retry_failed``, ``precision``, ``identity_sets`` (the CLI's
    ``--protocols``). ``out`` defaults to ``runs/METHOD__BENCH``; a rerun recomputes nothing
    finished. Raises :class:`~picbench.errors.PicbenchError` where the CLI exits 2. Under
    ``torchrun`` only rank 0 writes results.json: call it there."""
    from picbench.runner import RunConfig, default_out, run

    allowed = {f.name for f in fields(RunConfig)} - {"method", "bench", "out", "shard"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise PicbenchError(f"evaluate: unknown option(s) {unknown}; the options are {sorted(allowed)}")
    for name in ("seeds", "metrics", "identity_sets", "samples"):  # sequences -> the tuples RunConfig records
        if options.get(name) is not None:
            options[name] = tuple(options[name])
    for name in ("data_dir", "weights_dir"):
        if options.get(name) is not None:
            options[name] = Path(options[name])
    options["params"] = dict(options.get("params") or {})
    options["weights"] = {role: str(folder) for role, folder in (options.get("weights") or {}).items()}
    config = RunConfig(method=method, bench=str(bench), out=Path(out) if out is not None else default_out(method, str(bench)), **options)
    run(config, progress)
    return load_results(config.out)  # what results.json holds, read back: equal to what any reader of the folder gets


def load_results(path: str | Path) -> Evaluation:
    """The run in a run folder (or the folder of a results.json path), read back and checked."""
    path = Path(path)
    folder = path.parent if path.name == RESULTS_FILE and path.is_file() else path
    return Evaluation(load_result(folder), folder)
