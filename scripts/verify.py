"""make verify: fail when a committed file is not what it must be.

    generated   sql/pgjobs--<version>.sql and the upgrade into <version> are what make
                builds from sql/src and sql/upgrades (built in a scratch copy, the tree
                is not touched); no older version's full script is committed (releases
                are git tags: tests_py/test_upgrade.py builds them from there)
    test data   tests_sql/502_cron_next_run.sql is what scripts/gen_cron_cases.py prints
    released    each sql/pgjobs--A--B.sql whose B is tagged vB equals `git show vB:` of it
                (skipped, and said so, where no release tag is present: a shallow clone
                or an unpacked archive)
    versions    META.json (version, provides), python/pgjobs/__init__.py (which
                pyproject.toml reads) and CHANGELOG.md follow pgjobs.control's
                default_version

Prints one line per check and per problem; exits 1 when there is any problem.
Run with the project's virtualenv (croniter comes with the testdata extra).
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SQL = ROOT / "sql"
SCRIPT = re.compile(r"^pgjobs--(?P<a>\d+\.\d+\.\d+)(?:--(?P<b>\d+\.\d+\.\d+))?\.sql$")
# What make needs to build the generated scripts, copied into a scratch directory.
BUILD_INPUTS = ["Makefile", "pgjobs.control", "sql/src", "sql/upgrades",
                "scripts/build_upgrade.py"]
# Generated test data: (generator command after the interpreter, committed output).
TEST_DATA = [(["scripts/gen_cron_cases.py"], "tests_sql/502_cron_next_run.sql")]


def control_version() -> str:
    text = (ROOT / "pgjobs.control").read_text()
    match = re.search(r"^default_version\s*=\s*'([^']+)'", text, re.M)
    if not match:
        raise SystemExit("verify: pgjobs.control has no default_version")
    return match.group(1)


def differs(problem: str, expected: str, found: str, hint: str) -> str:
    """A problem, the start of the diff between what should be and what is, a hint."""
    lines = list(difflib.unified_diff(expected.splitlines(), found.splitlines(),
                                      "expected", "found", lineterm="", n=1))
    shown = "\n".join("      " + line for line in lines[:12])
    more = f"\n      ... ({len(lines) - 12} more diff lines)" if len(lines) > 12 else ""
    return f"{problem}:\n{shown}{more}\n      ({hint})"


def check_generated(version: str) -> list[str]:
    problems = []
    with tempfile.TemporaryDirectory(prefix="pgjobs-verify.") as tmp:
        scratch = Path(tmp)
        for item in BUILD_INPUTS:
            source, target = ROOT / item, scratch / item
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
        run = subprocess.run(["make", "-s", "-C", tmp, "all"], capture_output=True, text=True)
        if run.returncode != 0:
            return [f"make failed in a scratch copy:\n{run.stdout}{run.stderr}"]
        for made in sorted((scratch / "sql").glob("pgjobs--*.sql")):
            committed = SQL / made.name
            if not committed.is_file():
                problems.append(f"sql/{made.name} is generated but not committed (run make)")
            elif committed.read_text() != made.read_text():
                problems.append(differs(f"sql/{made.name} is not what its sources make",
                                        made.read_text(), committed.read_text(),
                                        "run make and commit it"))
    for path in sorted(SQL.glob("pgjobs--*.sql")):
        match = SCRIPT.match(path.name)
        if match and match["b"] is None and match["a"] != version:
            problems.append(f"sql/{path.name} is an old version's full script: releases are "
                            f"git tags (v{match['a']}), git rm it")
    return problems


def check_test_data() -> list[str]:
    problems = []
    for command, output in TEST_DATA:
        run = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True,
                             text=True)
        if run.returncode != 0:
            problems.append(f"{' '.join(command)} failed (run bash scripts/bootstrap.sh "
                            f"for its dependencies):\n{run.stderr.strip()}")
        elif (ROOT / output).read_text() != run.stdout:
            problems.append(differs(f"{output} is not what {command[0]} prints", run.stdout,
                                    (ROOT / output).read_text(),
                                    f"run .venv/bin/python {' '.join(command)} > {output}"))
    return problems


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)


def check_released(version: str) -> tuple[list[str] | None, list[str]]:
    """Problems (None: nothing could be compared), and notes on what was not compared."""
    listed = git("tag", "--list", "v*")
    tags = set(listed.stdout.split()) if listed.returncode == 0 else set()
    if not tags:
        return None, ["no release tags here (shallow clone or not a git checkout): released "
                      "upgrade scripts NOT compared with their tags"]
    problems, notes = [], []
    for path in sorted(SQL.glob("pgjobs--*--*.sql")):
        match = SCRIPT.match(path.name)
        if not match:
            continue
        tag = f"v{match['b']}"
        if tag not in tags:
            if match["b"] != version:
                notes.append(f"sql/{path.name}: no tag {tag}, not compared")
            continue
        shown = git("show", f"{tag}:sql/{path.name}")
        if shown.returncode != 0:
            problems.append(f"sql/{path.name} is not in release {tag}")
        elif shown.stdout != path.read_text():
            problems.append(differs(f"sql/{path.name} changed since its release {tag}",
                                    shown.stdout, path.read_text(),
                                    f"released scripts never change: git checkout {tag} "
                                    f"-- sql/{path.name}"))
    return problems, notes


def check_versions(version: str) -> list[str]:
    problems = []
    meta = json.loads((ROOT / "META.json").read_text())
    provided = meta.get("provides", {}).get("pgjobs", {})
    for where, value in [("META.json version", meta.get("version")),
                         ("META.json provides.pgjobs.version", provided.get("version"))]:
        if value != version:
            problems.append(f"{where} is {value!r}, pgjobs.control says {version!r}")
    if provided.get("file") != f"sql/pgjobs--{version}.sql":
        problems.append(f"META.json provides.pgjobs.file is {provided.get('file')!r}, "
                        f"not 'sql/pgjobs--{version}.sql'")
    init = (ROOT / "python/pgjobs/__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', init, re.M)
    if not match or match.group(1) != version:
        found = match and match.group(1)
        problems.append(f"python/pgjobs/__init__.py __version__ is {found!r}, "
                        f"pgjobs.control says {version!r}")
    pyproject = (ROOT / "pyproject.toml").read_text()
    static = re.search(r'^version\s*=\s*"([^"]+)"', pyproject, re.M)
    if static and static.group(1) != version:
        problems.append(f"pyproject.toml version is {static.group(1)!r}, "
                        f"pgjobs.control says {version!r}")
    if not static and 'attr = "pgjobs.__version__"' not in pyproject:
        problems.append("pyproject.toml has no version (static or attr pgjobs.__version__)")
    changelog = ROOT / "CHANGELOG.md"
    pattern = rf"^## .*\b{re.escape(version)}\b"
    if not changelog.is_file() or not re.search(pattern, changelog.read_text(), re.M):
        problems.append(f"CHANGELOG.md has no '## ...' heading for {version}")
    return problems


def main() -> int:
    version = control_version()
    failed = False
    released, notes = check_released(version)
    for name, problems in [("generated SQL", check_generated(version)),
                           ("generated test data", check_test_data()),
                           ("released upgrade scripts", released),
                           (f"versions ({version})", check_versions(version))]:
        status = "SKIPPED" if problems is None else "FAILED" if problems else "ok"
        print(f"verify: {name}: {status}")
        for problem in problems or []:
            print(f"  - {problem}")
        failed = failed or bool(problems)
    for note in notes:
        print(f"verify: note: {note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
