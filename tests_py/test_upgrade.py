"""Versioning: every upgrade path ends in exactly the schema of a fresh install.

For each version A from which sql/pgjobs--A--B.sql scripts lead to the current
default_version of pgjobs.control: CREATE EXTENSION pgjobs VERSION 'A', ALTER EXTENSION
pgjobs UPDATE, and compare schema_snapshot.snapshot() with a fresh CREATE EXTENSION pgjobs.
Old versions' full scripts are not committed: each is built from its release tag vA (the
tag's sql/src, Makefile and pgjobs.control, as make built it then) and put into the test
server's extension directory ($PGJOBS_TREE, see scripts/pgcluster.sh). Without the tag
(a shallow clone) that path is skipped, saying so. Also: the script files form one chain
to the current version, the server has the repository's scripts installed, and a fresh
install describes the same schema after DROP EXTENSION and CREATE EXTENSION again.
(That the committed scripts are what their sources make, and that versions agree, is
`make verify`'s part: scripts/verify.py.)
"""

from __future__ import annotations

import os
import re
import shutil
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


def extension_dir() -> Path | None:
    """The test server's extension directory under $PGJOBS_TREE (None without one)."""
    tree = os.environ.get("PGJOBS_TREE")
    if not tree:
        return None
    sharedir = subprocess.run(
        ["pg_config", "--sharedir"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(tree + sharedir) / "extension"


def git(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, **kwargs)


def build_release_script(version: str, work: Path) -> Path:
    """sql/pgjobs--<version>.sql as built by make from the sources of tag v<version>."""
    tag = f"v{version}"
    if git("rev-parse", "--quiet", "--verify", f"refs/tags/{tag}").returncode != 0:
        pytest.skip(
            f"no tag {tag} in this clone (shallow, or tags not fetched: git fetch --tags): "
            f"the {version} full script cannot be built, upgrade from {version} NOT tested"
        )
    control = git("show", f"{tag}:{EXTENSION}.control", text=True).stdout
    assert f"default_version = '{version}'" in control, f"tag {tag} is not version {version}"
    archive = git("archive", "--format=tar", tag, "Makefile", f"{EXTENSION}.control", "sql/src")
    assert archive.returncode == 0, archive.stderr
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
    script = work / "sql" / f"{EXTENSION}--{version}.sql"
    script.unlink(missing_ok=True)  # releases up to 0.6.0 committed it: build it anyway
    made = subprocess.run(["make", "-s", "-C", str(work), str(script.relative_to(work))],
                          capture_output=True, text=True)
    assert made.returncode == 0, f"make in tag {tag}'s sources failed:\n{made.stderr}"
    return script


def install_release_script(conn: psycopg.Connection, version: str, work: Path) -> None:
    """Make the server able to CREATE EXTENSION pgjobs VERSION '<version>'."""
    ext_dir = extension_dir()
    if ext_dir is None:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extension_versions WHERE name = %s AND version = %s",
            (EXTENSION, version),
        ).fetchone()
        if not available:
            pytest.skip(f"PGJOBS_TREE not set: cannot install the {version} full script")
        return
    shutil.copyfile(build_release_script(version, work), ext_dir / f"{EXTENSION}--{version}.sql")


@pytest.mark.parametrize("start", UPGRADE_STARTS)
def test_upgrade_yields_the_fresh_schema(empty_db, start, tmp_path):
    with psycopg.connect(empty_db(), autocommit=True) as fresh:
        fresh.execute(sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(EXTENSION)))
        assert extension_version(fresh) == CURRENT
        expected = snapshot(fresh)

    with psycopg.connect(empty_db(), autocommit=True) as upgraded:
        install_release_script(upgraded, start, tmp_path)
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


def test_server_has_the_repository_scripts(db):
    available = {
        r[0]
        for r in db.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = %s", (EXTENSION,)
        )
    }
    installs, _ = script_files()
    missing = sorted(installs - available)
    assert not missing, f"versions unknown to the server (run make install): {missing}"
    ext_dir = extension_dir()
    if ext_dir is None:
        pytest.skip("PGJOBS_TREE not set: cannot compare installed files")
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
