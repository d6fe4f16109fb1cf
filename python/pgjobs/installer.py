"""Put the app_jobs schema into a database, as an extension or as plain SQL.

`CREATE EXTENSION pgjobs` needs the extension's files on the database server
(`make install`). Where that is impossible (a managed service), the same versioned
scripts shipped inside this package are applied directly; the installed version is then
read from app_jobs.pgjobs_version().
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

from . import sql

_FULL = re.compile(r"^pgjobs--(\d+\.\d+\.\d+)\.sql$")
_STEP = re.compile(r"^pgjobs--(\d+\.\d+\.\d+)--(\d+\.\d+\.\d+)\.sql$")


class InstallError(Exception):
    """The database is not in a state this command can work with."""


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def script_dir() -> Path:
    """Where the versioned SQL scripts shipped with this package are."""
    return Path(str(resources.files("pgjobs") / "sql"))


def bundled_versions() -> list[str]:
    """Versions with a full install script, oldest first."""
    found = [m.group(1) for p in script_dir().iterdir() if (m := _FULL.match(p.name))]
    return sorted(found, key=_key)


def latest_version() -> str:
    versions = bundled_versions()
    if not versions:
        raise InstallError(f"no pgjobs--X.Y.Z.sql scripts found in {script_dir()}")
    return versions[-1]


def upgrade_path(start: str, target: str) -> list[Path]:
    """The chain of upgrade scripts from start to target (shortest, in order)."""
    steps: dict[str, list[tuple[str, Path]]] = {}
    for p in script_dir().iterdir():
        m = _STEP.match(p.name)
        if m:
            steps.setdefault(m.group(1), []).append((m.group(2), p))
    frontier: list[tuple[str, list[Path]]] = [(start, [])]
    seen = {start}
    while frontier:
        version, path = frontier.pop(0)
        if version == target:
            return path
        for nxt, p in sorted(steps.get(version, []), key=lambda s: _key(s[0])):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append((nxt, [*path, p]))
    raise InstallError(f"no upgrade path from {start} to {target} in {script_dir()}")


@dataclass
class Installed:
    """How (and whether) pgjobs is installed in a database."""

    mode: str | None  # "extension", "plain", or None
    version: str | None


def installed(conn: psycopg.Connection) -> Installed:
    row = conn.execute(sql.INSTALLED_EXTENSION).fetchone()
    if row:
        return Installed("extension", row[0])
    if conn.execute(sql.SCHEMA_EXISTS).fetchone()[0]:
        version = conn.execute(sql.PLAIN_INSTALL_VERSION).fetchone()[0]
        if version is None:
            raise InstallError("schema app_jobs exists but was not created by pgjobs")
        return Installed("plain", version)
    return Installed(None, None)


def install(conn: psycopg.Connection, extension: bool = False) -> str:
    """Install the newest version; returns a one-line report."""
    state = installed(conn)
    if state.mode is not None:
        return f"pgjobs {state.version} is already installed ({state.mode}); nothing to do"
    if extension:
        with conn.transaction():
            conn.execute(sql.CREATE_EXTENSION)
        return f"installed pgjobs {installed(conn).version} with CREATE EXTENSION"
    version = latest_version()
    script = (script_dir() / f"pgjobs--{version}.sql").read_text()
    with conn.transaction():
        conn.execute(script)
    return f"installed pgjobs {version} from the bundled SQL (no CREATE EXTENSION)"


def upgrade(conn: psycopg.Connection) -> str:
    """Bring an installed pgjobs to the newest version; returns a one-line report."""
    state = installed(conn)
    if state.mode is None:
        raise InstallError("pgjobs is not installed in this database; run `pgjobs install`")
    if state.mode == "extension":
        with conn.transaction():
            conn.execute(sql.UPDATE_EXTENSION)
        after = installed(conn).version
        if after == state.version:
            return f"pgjobs extension {after} is up to date with the server's files"
        return f"upgraded pgjobs extension {state.version} -> {after}"
    target = latest_version()
    if _key(state.version) >= _key(target):
        return f"pgjobs {state.version} is up to date"
    steps = upgrade_path(state.version, target)
    with conn.transaction():
        for step in steps:
            conn.execute(step.read_text())
    return f"upgraded pgjobs {state.version} -> {target} ({len(steps)} script(s))"
