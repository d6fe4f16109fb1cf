"""Build an upgrade script from its hand-written source: sql/upgrades/pgjobs--A--B.sql.in.

The source is the upgrade in SQL, written by hand (what changed: ALTER TABLE, new
objects, dropped ones), plus directives that copy definitions from sql/src so a changed
function is written once:

    --@function sql/src/120_get_jobs.sql get_jobs [other_function ...]
        the CREATE FUNCTION statements of those functions (as CREATE OR REPLACE), with
        their comment lines and COMMENT ON FUNCTION
    --@file sql/src/950_security.sql
        the whole file (it must be re-runnable)
    --@version
        app_jobs.pgjobs_version() returning B

    usage: build_upgrade.py sql/upgrades/pgjobs--A--B.sql.in > sql/pgjobs--A--B.sql

Only the upgrade into the version being developed is built by make; once B is released
(tagged vB) its script is frozen and `make verify` compares it with the tag's.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOLLAR = re.compile(r"\$[A-Za-z_]*\$")
CREATE = re.compile(r"CREATE (?:OR REPLACE )?FUNCTION app_jobs\.(\w+)\(")
COMMENT = re.compile(r"COMMENT ON FUNCTION app_jobs\.(\w+)")


def statements(text: str) -> list[str]:
    """Top-level statements of an SQL file, each with the comment lines above it
    (a statement ends with ';' at the end of a line outside a dollar-quoted body)."""
    out: list[str] = []
    current: list[str] = []
    body: str | None = None
    for line in text.split("\n"):
        current.append(line)
        if line.lstrip().startswith("--"):
            continue
        for match in DOLLAR.finditer(line):
            if body is None:
                body = match.group(0)
            elif body == match.group(0):
                body = None
        if body is None and line.rstrip().endswith(";"):
            out.append("\n".join(current).strip("\n"))
            current = []
    return out


def functions(path: str, names: list[str]) -> str:
    """The definitions and comments of `names` in sql/src file `path`."""
    picked, found = [], set()
    for statement in statements((ROOT / path).read_text()):
        code = re.sub(r"^(?:--[^\n]*\n)*", "", statement)
        create, comment = CREATE.match(code), COMMENT.match(code)
        if create and create.group(1) in names:
            found.add(create.group(1))
            picked.append(statement.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
        elif comment and comment.group(1) in names:
            picked.append(statement)
    missing = sorted(set(names) - found)
    if missing:
        raise SystemExit(f"build_upgrade: {path} defines no {', '.join(missing)}")
    return f"-- from {path}\n" + "\n\n".join(picked)


def version_function(version: str) -> str:
    return ("-- The version of the app_jobs objects, for installs without CREATE EXTENSION.\n"
            "CREATE OR REPLACE FUNCTION app_jobs.pgjobs_version() RETURNS text\n"
            "LANGUAGE sql IMMUTABLE\n"
            f"AS $$ SELECT '{version}'::text $$;")


def build(source: Path) -> str:
    """The upgrade script that `source` describes."""
    match = re.fullmatch(r"pgjobs--([\d.]+)--([\d.]+)\.sql\.in", source.name)
    if not match:
        raise SystemExit(f"build_upgrade: {source.name} is not pgjobs--A--B.sql.in")
    out = []
    for line in source.read_text().split("\n"):
        words = line.split()
        if words[:1] == ["--@function"] and len(words) >= 3:
            out.append(functions(words[1], words[2:]))
        elif words[:1] == ["--@file"] and len(words) == 2:
            out.append(f"-- from {words[1]} (re-runnable)\n"
                       + (ROOT / words[1]).read_text().rstrip("\n"))
        elif words == ["--@version"]:
            out.append(version_function(match.group(2)))
        elif words[:1] and words[0].startswith("--@"):
            raise SystemExit(f"build_upgrade: unknown directive: {line}")
        else:
            out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(build(Path(sys.argv[1])))
