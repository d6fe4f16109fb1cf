"""How pgjobs finds its database: --database-url, then DATABASE_URL, then libpq's PG*."""

from __future__ import annotations

import os


def resolve_url(url: str | None) -> str:
    """The conninfo to use; an empty string lets libpq read the PG* variables."""
    if url:
        return url
    return os.environ.get("DATABASE_URL", "")


def prepare_threshold(text: str) -> int | None:
    """--prepare-threshold: 'none' (never prepare: works behind any pooler) or how many
    runs of a statement before psycopg prepares it (0: at once)."""
    import argparse

    if text.strip().lower() in ("none", "off", ""):
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 or 'none', got {text!r}")
    return value


def describe(conninfo: str) -> str:
    """The conninfo without its password, for log lines and errors."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(conninfo)
    except Exception:
        return "<unparseable database url>"
    params.pop("password", None)
    return make_conninfo(**params) or "(PG* environment)"


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (its type name when the text is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
