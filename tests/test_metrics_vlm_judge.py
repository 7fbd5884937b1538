"""The VLM judge: its prompt and answer parsing pinned, and a real forward pass through the tiny
random-weight Qwen2.5-VL (whose answers are gibberish: recorded failures, never 0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from picbench.imaging import load_rgb
from picbench.metrics.decoding import ScoreItem
from picbench.metrics.engine import MetricEngine
from picbench.metrics.vlm_judge import PROMPT, SCALE, JudgeAnswerError, VlmJudge, parse_grade
from picbench.records import Sample, Subject
from picbench.tiny.metric_models import tiny_weights

DOG = "dreambench/dataset/dog/00.jpg"


def test_prompt_and_scale_are_pinned():
    assert SCALE == 4
    assert PROMPT.format(class_word="dog").startswith("The first image shows a reference dog. The second image is a generated image.")
    assert "0 very poor, 1 poor, 2 fair, 3 good, 4 excellent" in PROMPT and PROMPT.endswith("Answer with one line: Score: N")


@pytest.mark.parametrize(
    "answer, grade",
    [
        ("Score: 3", 3),
        ("score:4", 4),
        ("Score: 0\n", 0),
        ("**Score:** 2", 2),
        ("The identity is kept well.\nScore: 3", 3),
        ("Score = 1", 1),
        ("Score: 2.0", 2),
        ("Score: 3. The colours match.", 3),
        ("Score: 3\nScore: 3", 3),
    ],
)
def test_good_answers_parse(answer, grade):
    assert parse_grade(answer) == grade


@pytest.mark.parametrize(
    "answer, why",
    [
        ("", "no 'Score: N'"),
        ("I would say three.", "no 'Score: N'"),
        ("Score: 7", "outside 0..4"),
        ("Score: -1", "outside 0..4"),
        ("Score: 2.5", "not a whole number"),
        ("Score: 2\nScore: 4", "several different grades"),
        ("{'score': __import__('os')}", "no 'Score: N'"),
        ("3/4", "no 'Score: N'"),
    ],
)
def test_malformed_answers_are_refused_with_the_reason(answer, why):
    with pytest.raises(JudgeAnswerError, match=why):
        parse_grade(answer)


def test_the_reusable_judge_runs_the_tiny_qwen(data_dir: Path):
    judge = VlmJudge(tiny_weights("vision-r1"), max_new_tokens=6)
    reference = load_rgb(data_dir / DOG).resize((112, 112))
    judgement = judge.judge(reference, reference, "dog")
    assert isinstance(judgement.raw, str)
    assert (judgement.score is None) == (judgement.problem is not None)
    if judgement.score is not None:
        assert 0.0 <= judgement.score <= 1.0
    assert judge.provenance()["prompt"] == PROMPT and len(judge.provenance()["weights_sha256"]) == 64


def test_the_judge_as_a_metric_records_unparseable_answers_not_zero(data_dir: Path):
    engine = MetricEngine(models="tiny", metrics=["vlm_judge"], detector=None)
    sample = Sample("dog", "a dog", 128, 128, "single", (Subject("dog", "dog", (DOG,), box=(0.1, 0.1, 0.9, 0.9)),))
    image = load_rgb(data_dir / DOG).resize((128, 128))
    score = next(engine.score([ScoreItem(sample, 0, None, image=image)], data_dir))
    value = score.metrics["vlm_judge"]
    if value is None:
        assert any("metric vlm_judge" in f and "judge answer unparseable" in f for f in score.failures)
    else:
        assert 0.0 <= value <= 1.0 and value * SCALE == round(value * SCALE)
    assert engine.provenance()["metric_details"]["vlm_judge"]["prompt"] == PROMPT
