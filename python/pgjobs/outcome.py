"""One attempt's outcome as finish_jobs takes it, made safe to store.

Shared by the worker and pgjobs.testing: a handler's return value becomes JSON (or its
repr), an exception becomes text plus error data, and nothing that PostgreSQL text or
jsonb cannot hold (NUL, lone surrogates, NaN) reaches the database, where one such value
would make it refuse a whole batch of outcomes.
"""

from __future__ import annotations

import json
import re
import traceback
from dataclasses import dataclass
from typing import Any

from .job import Job

MAX_ERROR_TEXT = 8000


@dataclass
class Outcome:
    """The result of one attempt, kept until the database has it."""

    job: Job
    outcome: str  # completed, failed or cancelled
    error: str | None = None
    error_data: dict[str, Any] | None = None
    result: Any = None

    @classmethod
    def raised(cls, job: Job, exc: BaseException, error: str | None = None) -> Outcome:
        """A failed attempt: the exception's text (or `error`), type and traceback."""
        return cls(
            job, "failed", error=error_text(exc) if error is None else storable(error),
            error_data={"type": type(exc).__name__, "traceback": traceback_text(exc)},
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.job.id, "attempt": self.job.attempts, "outcome": self.outcome,
            "error": self.error, "error_data": self.error_data, "result": self.result,
        }



def error_text(exc: BaseException) -> str:
    """The exception's text and traceback, as recorded in last_error."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    head = f"{type(exc).__name__}: {exc}"
    body = text if len(text) <= MAX_ERROR_TEXT else text[-MAX_ERROR_TEXT:]
    return storable(f"{head}\n{body}")


def traceback_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return storable(text[-MAX_ERROR_TEXT:])


def storable(text: str) -> str:
    """Escape NUL and lone surrogates, which PostgreSQL text and jsonb cannot hold: one
    such character would make the database reject the worker's whole batch of outcomes."""
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# A \u0000 escape in JSON text (not an escaped backslash followed by "u0000").
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def jsonable(value: Any) -> Any:
    """The handler's return value as JSON; what jsonb cannot hold is stored as its repr.

    Besides what json cannot encode, that is NaN/Infinity (not JSON), NUL characters and
    lone surrogates (not storable): the database would reject the worker's whole batch.
    """
    if value is None:
        return None
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate
        if not _JSON_NUL.search(text):
            return value
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        return storable(repr(value))
    except Exception:  # noqa: BLE001 - a broken __repr__ must not lose the outcome
        return f"<{type(value).__name__} object>"
