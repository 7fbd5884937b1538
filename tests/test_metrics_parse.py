"""Vision-R1 answers parsed as Vision-R1's localization evaluation parses them, on a corpus of the
forms its answers take, never through ``eval``.

The evaluation: jefferyZhan/Griffon @ 9866875e7d18e705239f3e03115a55aef30ab635,
``Vision-R1/eval/eval_localization.py``: ``parse_json`` (lines 226-234) takes the body of the first
line that is exactly ```` ```json ````; ``ast.literal_eval`` reads it (line 1071), else the text up to
the last ``"}`` closed with ``]`` (lines 1073-1075), else the output is skipped (line 1111); each
entry needs ``bbox_2d`` (four numbers, ``xyxy2xywh``) and a string ``label`` (``.lower()``), else it
is skipped (lines 1076-1092).
"""

from __future__ import annotations

import builtins

import pytest

from picbench.metrics.detectors.parse import AnswerFormatError, answer_literal, parse_answer, strip_json_fence

DOG = ((12.0, 40.0, 200.0, 310.0), "dog")
BAG = ((220.0, 50.0, 400.0, 300.0), "backpack")

# name -> (answer, boxes the evaluation keeps, whether its cut-off recovery was used)
CORPUS: dict[str, tuple[str, list, bool]] = {
    "fenced JSON": (
        '```json\n[\n\t{"bbox_2d": [12, 40, 200, 310], "label": "dog"},\n\t{"bbox_2d": [220, 50, 400, 300], "label": "backpack"}\n]\n```',
        [DOG, BAG],
        False,
    ),
    "bare JSON": ('[{"bbox_2d": [12, 40, 200, 310], "label": "dog"}]', [DOG], False),
    "fenced, with text around": ('Here they are:\n```json\n[{"bbox_2d": [12, 40, 200, 310], "label": "dog"}]\n```\nDone.', [DOG], False),
    "single-quoted Python literal": ("[{'bbox_2d': [12, 40, 200, 310], 'label': 'dog'}]", [DOG], False),
    "fenced single-quoted literal": (
        "```json\n[{'bbox_2d': [12, 40, 200, 310], 'label': 'dog'}, {'bbox_2d': [220, 50, 400, 300], 'label': 'backpack'}]\n```",
        [DOG, BAG],
        False,
    ),
    "tuples": ("({'bbox_2d': (12, 40, 200, 310), 'label': 'dog'},)", [DOG], False),
    "label case": ('[{"bbox_2d": [12, 40, 200, 310], "label": "Dog"}]', [DOG], False),  # catname2id[item["label"].lower()]
    "floats": ('[{"bbox_2d": [12.5, 40, 200.25, 310], "label": "dog"}]', [((12.5, 40.0, 200.25, 310.0), "dog")], False),
    "box nested once": ('[{"bbox_2d": [[12, 40, 200, 310]], "label": "dog"}]', [DOG], False),  # numpy reads it as one row
    "empty list": ("```json\n[]\n```", [], False),
    "unclosed fence": ('```json\n[{"bbox_2d": [12, 40, 200, 310], "label": "dog"}]', [DOG], False),
    "two fences, the first is read": ('```json\n[{"bbox_2d": [12, 40, 200, 310], "label": "dog"}]\n```\n```json\n[]\n```', [DOG], False),
    "truncated list": ('```json\n[{"bbox_2d": [12, 40, 200, 310], "label": "dog"}, {"bbox_2d": [220, 50, 400, 300], "lab', [DOG], True),
    "truncated after two entries": (
        '[{"bbox_2d": [12, 40, 200, 310], "label": "dog"},\n {"bbox_2d": [220, 50, 400, 300], "label": "backpack"},\n {"bbox_2d": [9, 10,',
        [DOG, BAG],
        True,
    ),
    "closing bracket missing": ('[{"bbox_2d": [12, 40, 200, 310], "label": "dog"}', [DOG], True),
    # the recovery looks for '"}': a single-quoted list cut off keeps nothing ("[" + "]")
    "truncated single-quoted list": ("[{'bbox_2d': [12, 40, 200, 310], 'label': 'dog'}, {'bbox_2d': [1,", [], True),
    # a call is never run: literal_eval refuses it, and the recovery finds no '"}' to cut after
    "call inside a literal": ("[{'bbox_2d': [1, 2, 3, 4], 'label': open('/etc/passwd').read()}]", [], True),
    # JSON's null is not a Python literal: the whole answer fails literal_eval, and so does its recovery's cut
    "JSON null": ('[{"bbox_2d": [12, 40, 200, 310], "label": "dog", "score": null}]', [], True),
    # a JSON object is walked key by key: no box (the evaluation's `for item in extracted`)
    "single object": ('{"bbox_2d": [12, 40, 200, 310], "label": "dog"}', [], False),
    "bad entries skipped": (
        '[{"bbox_2d": [1, 2, 3], "label": "dog"}, {"bbox_2d": [1, 2, 3, 4]}, "dog", {"label": "cat"}, {"bbox_2d": ["1", "2", "3", "4"], "label": "cat"},'
        ' {"bbox_2d": [True, 2, 3, 4], "label": "cat"}, {"bbox_2d": [1, 2, 3, 4], "label": 7}, {"bbox_2d": [12, 40, 200, 310], "label": "dog"}]',
        [DOG],
        False,
    ),
}

# answers the evaluation skips whole (its outer `except Exception: continue`, line 1111)
GARBAGE = {
    "prose": "I cannot find any dog in this image.",
    "box in prose": "The dog is at [12, 40, 200, 310].",
    "code": "__import__('os').system('echo pwned')",
    "uppercase fence": '```JSON\n[{"bbox_2d": [1, 2, 3, 4], "label": "toy"}]\n```',  # parse_json wants exactly ```json
    "think tags": '<think>The dog is left.</think>\n<answer>[{"bbox_2d": [3, 4, 50, 60], "label": "dog"}]</answer>',
    "cut inside the first entry": '```json\n{"bbox_2d": \n```',
    "a number": "42",
    "null": "None",
    "empty": "   ",
}


@pytest.fixture(autouse=True)
def no_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer below is parsed with eval and exec unavailable."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the parser called eval/exec")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)


@pytest.mark.parametrize("name", list(CORPUS))
def test_answer_forms_parse_as_the_evaluation_parses_them(name: str) -> None:
    text, expected, recovered = CORPUS[name]
    parsed = parse_answer(text)
    assert [(b.box, b.label) for b in parsed.boxes] == expected
    assert any("cut off" in p for p in parsed.problems) == recovered


def test_skipped_entries_are_named() -> None:
    problems = " | ".join(parse_answer(CORPUS["bad entries skipped"][0]).problems)
    for reason in ("must be 4 numbers", "no bbox_2d", "not an object", "non-numeric", "no string label"):
        assert reason in problems
    assert len(parse_answer(CORPUS["single object"][0]).problems) == 2  # its two keys, each not an object


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_gives_no_boxes_and_a_named_error(name: str) -> None:
    with pytest.raises(AnswerFormatError):
        parse_answer(GARBAGE[name])


def test_fence_stripping_and_recovery_are_the_evaluations() -> None:
    assert strip_json_fence("x\n```json\n[1]\n```\ny") == "[1]\n"
    assert strip_json_fence("```json \n[1]\n```") == "```json \n[1]\n```"  # only an exact ```json line
    assert answer_literal('[{"a": "b"}, {"a": "c"') == ([{"a": "b"}], True)  # cut after the last '"}', then ']'
    assert answer_literal("[{'a': 'b'}, {'a': 'c'") == ([], True)  # no '"}': text[:1] + ']'
    with pytest.raises(AnswerFormatError, match="cut off"):
        answer_literal("{'a': ")
    with pytest.raises(AnswerFormatError, match="empty"):
        parse_answer(None)
