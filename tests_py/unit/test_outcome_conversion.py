"""outcome.py without a server: a handler's return value and exceptions become what
finish_jobs can store (no NUL, lone surrogate or NaN reaches the database), and an
Outcome's JSON form names the job and attempt."""

from __future__ import annotations

import math

from pgjobs.outcome import MAX_ERROR_TEXT, Outcome, jsonable, storable


def test_storable_escapes_nul_and_lone_surrogates():
    assert storable("a\x00b") == "a\\x00b"
    assert storable("x\ud800y") == "x\\ud800y"
    assert storable("plain é") == "plain é"


def test_jsonable_keeps_json_and_stores_the_rest_as_repr():
    assert jsonable(None) is None
    assert jsonable({"a": [1, 2.5, "é"]}) == {"a": [1, 2.5, "é"]}
    assert jsonable(math.nan) == "nan"
    assert jsonable({"k": "a\x00"}) == storable(repr({"k": "a\x00"}))
    assert jsonable({1, 2}) == "{1, 2}"

    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    assert jsonable(Broken()) == "<Broken object>"


def test_raised_outcome_carries_text_type_and_traceback(make_job):
    job = make_job(7, attempts=2)
    try:
        raise ValueError("bad \x00 input")
    except ValueError as exc:
        outcome = Outcome.raised(job, exc)
    assert outcome.outcome == "failed"
    assert outcome.error.startswith("ValueError: bad \\x00 input")
    assert outcome.error_data["type"] == "ValueError"
    assert "\x00" not in outcome.error_data["traceback"]
    assert len(outcome.error_data["traceback"]) <= MAX_ERROR_TEXT + 10
    assert Outcome.raised(job, ValueError("x"), error="short").error == "short"
    assert outcome.as_json() == {"id": 7, "attempt": 2, "outcome": "failed",
                                 "error": outcome.error, "error_data": outcome.error_data,
                                 "result": None}
