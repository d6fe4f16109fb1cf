"""The reference in doc/ is complete and names nothing that is not there: every public
function of a fresh install (with each of its parameters) in doc/sql-api.md, every
SQLSTATE that sql/src raises in doc/errors.md, every setting in doc/sql-api.md's Settings
table, every option of `pgjobs-worker` in doc/worker.md and of `pgjobs` in doc/admin.md.

Public functions are those of schema app_jobs granted to anyone but their owner (the
grant list of sql/src/950_security.sql; internal helpers are granted to nobody), except
names starting with `_`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "doc"
BIN = Path(sys.executable).parent

# Each function's entry in doc/sql-api.md: "#### app_jobs.name" (several names: ", ").
FUNCTION_HEADING = re.compile(r"^#### (app_jobs\.\w+(?:, app_jobs\.\w+)*)\s*$", re.M)
# A documented error code: a row of the table in doc/errors.md.
ERROR_ROW = re.compile(r"^\| `(PJ\d{3})`", re.M)
RAISED = re.compile(r"ERRCODE\s*=\s*'(PJ\d{3})'")
OPTION = re.compile(r"--[a-z][a-z-]*")

PUBLIC_FUNCTIONS = r"""
SELECT p.proname, p.proargnames, p.proargmodes
FROM pg_catalog.pg_proc AS p
WHERE p.pronamespace = 'app_jobs'::regnamespace
    AND p.proname NOT LIKE '\_%'
    AND (p.proacl IS NULL  -- the default: PUBLIC may execute
        OR EXISTS (
            SELECT 1 FROM pg_catalog.aclexplode(p.proacl) AS a
            WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
        ))
ORDER BY p.proname, p.oid
"""


def sections(text: str, heading: re.Pattern) -> dict[str, str]:
    """Each name of each heading matched, with the text up to the next heading of any
    level."""
    found: dict[str, str] = {}
    for m in heading.finditer(text):
        rest = text[m.end():]
        end = re.search(r"^#", rest, re.M)
        body = rest[: end.start()] if end else rest
        for name in m.group(1).split(", "):
            found[name.removeprefix("app_jobs.")] = body
    return found


def public_functions(db: psycopg.Connection) -> dict[str, set[str]]:
    """Public function name -> the names of its input parameters (over every overload)."""
    functions: dict[str, set[str]] = {}
    for name, argnames, argmodes in db.execute(PUBLIC_FUNCTIONS).fetchall():
        names = argnames or []
        modes = argmodes or ["i"] * len(names)
        inputs = {n for n, m in zip(names, modes, strict=True) if m in ("i", "b", "v") and n}
        functions.setdefault(name, set()).update(inputs)
    return functions


def test_every_public_function_and_parameter_is_documented(db: psycopg.Connection) -> None:
    documented = sections((DOC / "sql-api.md").read_text(), FUNCTION_HEADING)
    functions = public_functions(db)
    assert len(functions) > 30, functions  # the query found the API, not nothing

    missing = sorted(set(functions) - set(documented))
    assert not missing, f"public functions without a '#### app_jobs.name' entry: {missing}"
    unknown = sorted(set(documented) - set(functions))
    assert not unknown, f"doc/sql-api.md documents functions that are not public: {unknown}"

    for name, params in functions.items():
        body = documented[name]
        lacking = sorted(p for p in params if not re.search(rf"\b{p}\b", body))
        assert not lacking, f"app_jobs.{name}: parameters not in its entry: {lacking}"


def test_every_error_code_is_documented() -> None:
    raised = set()
    for path in sorted((REPO / "sql" / "src").glob("*.sql")):
        raised.update(RAISED.findall(path.read_text()))
    documented = set(ERROR_ROW.findall((DOC / "errors.md").read_text()))
    assert len(raised) > 30, raised

    assert not raised - documented, (
        f"raised in sql/src, missing from doc/errors.md: {sorted(raised - documented)}")
    assert not documented - raised, (
        f"in doc/errors.md, raised nowhere: {sorted(documented - raised)}")


def test_every_setting_is_documented(db: psycopg.Connection) -> None:
    (check,) = db.execute(
        "SELECT pg_catalog.pg_get_constraintdef(c.oid) FROM pg_catalog.pg_constraint AS c "
        "WHERE c.conname = 'settings_name_check' "
        "AND c.conrelid = 'app_jobs.settings'::regclass"
    ).fetchone()
    settings = set(re.findall(r"'(\w+)'::text", check))
    assert "history" in settings, check

    text = (DOC / "sql-api.md").read_text()
    table = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    assert documented == settings


def options(*command: str) -> set[str]:
    out = subprocess.run([str(BIN / command[0]), *command[1:], "--help"], check=True,
                         capture_output=True, text=True).stdout
    return set(OPTION.findall(out)) - {"--help"}


def test_every_worker_option_is_documented() -> None:
    text = (DOC / "worker.md").read_text()
    table = set(re.findall(r"^\| `(--[a-z-]+)", text, re.M))
    flags = options("pgjobs-worker")
    assert "--concurrency" in flags

    assert not flags - table, f"not in doc/worker.md's table: {sorted(flags - table)}"
    assert not table - flags, f"in doc/worker.md's table, no such option: {sorted(table - flags)}"


def test_every_admin_option_is_documented() -> None:
    text = (DOC / "admin.md").read_text()
    flags = options("pgjobs")
    for sub in ("install", "upgrade", "status", "add", "retry", "remove", "shard"):
        flags |= options("pgjobs", sub)
        assert f"pgjobs {sub}" in text, f"doc/admin.md never shows `pgjobs {sub}`"
    documented = set(OPTION.findall(text))

    assert not flags - documented, f"not in doc/admin.md: {sorted(flags - documented)}"
