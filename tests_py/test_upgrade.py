"""Versioning: every upgrade path ends in exactly the schema of a fresh install.

For each version A from which sql/pgjobs--A--B.sql scripts lead to the current
default_version of pgjobs.control: CREATE EXTENSION pgjobs VERSION 'A', ALTER EXTENSION
pgjobs UPDATE, and compare schema_snapshot.snapshot() with a fresh CREATE EXTENSION pgjobs
(this part runs by itself as soon as the first upgrade script appears). Also: the script
files form one chain to the current version, the current script is what `make` generates
from sql/src, the server has the repository's scripts installed, and a fresh install
describes the same schema after DROP EXTENSION and CREATE EXTENSION again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from schema_snapshot import SECTIONS, diff, snapshot

ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = ROOT / "sql"
EXTENSION = "pgjobs"
SCRIPT_RE = re.compile(rf"^{EXTENSION}--(?P<a>[^-][^/]*?)(?:--(?P<b>[^-][^/]*?))?\.sql$")


def current_version() -> str:
    text = (ROOT / f"{EXTENSION}.control").read_text()
    match = re.search(r"^default_version\s*=\s*'([^']+)'", text, re.M)
    assert match, "pgjobs.control has no default_version"
    return match.group(1)


def script_files() -> tuple[set[str], set[tuple[str, str]]]:
    """Versions with a full install script, and (from, to) pairs of upgrade scripts."""
    installs: set[str] = set()
    upgrades: set[tuple[str, str]] = set()
    for path in SQL_DIR.glob(f"{EXTENSION}--*.sql"):
        match = SCRIPT_RE.match(path.name)
        assert match, f"unexpected script name {path.name}"
        if match["b"] is None:
            installs.add(match["a"])
        else:
            upgrades.add((match["a"], match["b"]))
    return installs, upgrades


def versions_upgradable_to(target: str, upgrades: set[tuple[str, str]]) -> set[str]:
    """Every version from which a chain of upgrade scripts reaches `target`."""
    sources: dict[str, set[str]] = defaultdict(set)
    for a, b in upgrades:
        sources[b].add(a)
    seen: set[str] = set()
    todo = [target]
    while todo:
        for a in sources[todo.pop()]:
            if a not in seen and a != target:
                seen.add(a)
                todo.append(a)
    return seen


CURRENT = current_version()
_, _UPGRADES = script_files()
UPGRADE_STARTS = sorted(versions_upgradable_to(CURRENT, _UPGRADES)) or [
    pytest.param(
        None,
        marks=pytest.mark.skip(reason=f"no upgrade script leads to {CURRENT} yet"),
        id="no-upgrade-scripts",
    )
]


def extension_version(conn: psycopg.Connection) -> str | None:
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = %s", (EXTENSION,)
    ).fetchone()
    return row and row[0]


@pytest.mark.parametrize("start", UPGRADE_STARTS)
def test_upgrade_yields_the_fresh_schema(empty_db, start):
    with psycopg.connect(empty_db(), autocommit=True) as fresh:
        fresh.execute(sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(EXTENSION)))
        assert extension_version(fresh) == CURRENT
        expected = snapshot(fresh)

    with psycopg.connect(empty_db(), autocommit=True) as upgraded:
        upgraded.execute(
            sql.SQL("CREATE EXTENSION {} VERSION {}").format(
                sql.Identifier(EXTENSION), sql.Literal(start)
            )
        )
        assert extension_version(upgraded) == start
        upgraded.execute(sql.SQL("ALTER EXTENSION {} UPDATE").format(sql.Identifier(EXTENSION)))
        assert extension_version(upgraded) == CURRENT
        actual = snapshot(upgraded)

    if actual != expected:
        pytest.fail(
            f"schema after upgrading from {start} differs from a fresh {CURRENT} install:\n"
            + diff(expected, actual)
        )


def test_scripts_form_one_chain_to_the_current_version():
    installs, upgrades = script_files()
    assert CURRENT in installs, f"sql/{EXTENSION}--{CURRENT}.sql is missing"
    for a, b in upgrades:
        assert a != b, f"{EXTENSION}--{a}--{b}.sql upgrades a version to itself"
    reachable = versions_upgradable_to(CURRENT, upgrades) | {CURRENT}
    mentioned = installs | {v for pair in upgrades for v in pair}
    stranded = sorted(mentioned - reachable)
    assert not stranded, f"versions with no upgrade path to {CURRENT}: {stranded}"
    newer = sorted(b for a, b in upgrades if a == CURRENT)
    assert not newer, f"upgrade scripts leave the current version {CURRENT} for {newer}"


def test_current_script_is_generated_from_sources(tmp_path):
    out = tmp_path / f"{EXTENSION}--{CURRENT}.sql"
    subprocess.run(
        ["make", "-s", "-C", str(ROOT), f"CURRENT={out}", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    committed = (SQL_DIR / f"{EXTENSION}--{CURRENT}.sql").read_text()
    assert committed == out.read_text(), (
        f"sql/{EXTENSION}--{CURRENT}.sql differs from what make builds from sql/src: "
        f"run `make` and commit it"
    )


def test_meta_json_provides_the_current_version():
    meta = json.loads((ROOT / "META.json").read_text())
    provided = meta["provides"][EXTENSION]
    assert provided["version"] == CURRENT
    assert (ROOT / provided["file"]).is_file()


def test_server_has_the_repository_scripts(db):
    available = {
        r[0]
        for r in db.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = %s", (EXTENSION,)
        )
    }
    installs, upgrades = script_files()
    missing = sorted((installs | {v for pair in upgrades for v in pair}) - available)
    assert not missing, f"versions unknown to the server (run make install): {missing}"
    tree = os.environ.get("PGJOBS_TREE")
    if not tree:
        pytest.skip("PGJOBS_TREE not set: cannot compare installed files")
    sharedir = subprocess.run(
        ["pg_config", "--sharedir"], check=True, capture_output=True, text=True
    ).stdout.strip()
    ext_dir = Path(tree + sharedir) / "extension"
    for path in sorted(SQL_DIR.glob(f"{EXTENSION}--*.sql")):
        installed = ext_dir / path.name
        assert installed.is_file(), f"{path.name} is not installed (run make install)"
        assert installed.read_text() == path.read_text(), (
            f"installed {path.name} is stale (run make install DESTDIR=$PGJOBS_TREE)"
        )


def test_fresh_install_is_described_and_reproducible(db):
    first = snapshot(db)
    assert first["extension"] and first["extension"][0].startswith(f"{EXTENSION} version={CURRENT}")
    empty = [s for s in SECTIONS if not first[s]]
    assert set(empty) <= {"views", "types", "policies", "rules"}, f"empty sections: {empty}"
    relations = " ".join(first["relations"])
    for table in ("app_jobs.jobs", "app_jobs.job_queues", "app_jobs.scheduled_jobs"):
        assert f"{table} kind=r" in relations
    for table in ("app_jobs.jobs", "app_jobs.job_queues", "app_jobs.scheduled_jobs"):
        assert any(item.startswith(f"{table} ") for item in first["config"]), (
            f"{table} is not registered with pg_extension_config_dump"
        )
    functions = "\n".join(first["functions"])
    for name in ("add_job", "get_job", "get_jobs", "complete_job", "fail_job"):
        assert f"FUNCTION app_jobs.{name}(" in functions
    assert "schema app_jobs" in first["members"]

    db.execute(sql.SQL("ALTER EXTENSION {} UPDATE").format(sql.Identifier(EXTENSION)))
    assert snapshot(db) == first, "ALTER EXTENSION UPDATE on the current version changed it"

    # Plain DROP (no CASCADE) succeeds only if every object is a member of the extension.
    db.execute(sql.SQL("DROP EXTENSION {}").format(sql.Identifier(EXTENSION)))
    left = db.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'app_jobs'").fetchone()
    assert left == (0,), "DROP EXTENSION left the app_jobs schema behind"
    db.execute(sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(EXTENSION)))
    second = snapshot(db)
    if second != first:
        pytest.fail("re-created extension differs:\n" + diff(first, second, ("first", "again")))
    db.rollback()
