"""Sharding by tenant with PL/Proxy: set up a proxy database that routes the enqueue API
to shard clusters that each run pgjobs unchanged (doc/sharding.md).

`setup_proxy` is what `pgjobs shard` runs: the plproxy extension, the SQL/MED server
pgjobs_shards with one partition per shard (p0 = the first shard given, ...), a user
mapping, then sql/proxy/pgjobs_proxy.sql (the routing functions).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SERVER = "pgjobs_shards"


class ShardError(Exception):
    """The proxy cannot be set up as asked."""


def proxy_script() -> Path:
    """The proxy's SQL (shipped with this package)."""
    return Path(str(resources.files("pgjobs") / "sql" / "proxy" / "pgjobs_proxy.sql"))


def partition_conninfo(url: str) -> str:
    """A shard URL as PL/Proxy takes it: key=value conninfo (PL/Proxy appends
    `user=...` to a connect string without one, which a postgresql:// URL cannot take)."""
    try:
        return make_conninfo(**conninfo_to_dict(url))
    except psycopg.ProgrammingError as exc:
        raise ShardError(f"not a libpq URL or conninfo: {url!r}: {exc}") from None


def check_shard_count(count: int) -> None:
    """PL/Proxy routes by the low bits of the hash: 1, 2, 4, 8, ... shards."""
    if count < 1 or count & (count - 1):
        raise ShardError(f"PL/Proxy needs a power-of-two number of shards (1, 2, 4, 8, ...), "
                         f"got {count}")


def setup_proxy(conn: psycopg.Connection, shard_urls: list[str]) -> str:
    """Make the database of `conn` the proxy of these shards, in this order (the first
    takes the tenants whose hash ends in 0 bits, and NULL db_id). Run again with the
    same shards, it changes nothing; with others, it re-points the server (moving the
    tenants' jobs is the operator's part: doc/sharding.md)."""
    check_shard_count(len(shard_urls))
    parts = [partition_conninfo(u) for u in shard_urls]
    # (A table: the proxy's app_jobs.jobs is a composite type.)
    installed = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class"
        " WHERE oid = to_regclass('app_jobs.jobs') AND relkind IN ('r', 'p'))"
        " OR to_regprocedure('app_jobs.pgjobs_version()') IS NOT NULL").fetchone()[0]
    if installed:
        raise ShardError("this database has pgjobs installed: the proxy must be a database "
                         "of its own (the shards run pgjobs)")
    options = pgsql.SQL(", ").join(
        pgsql.SQL("{} {}").format(pgsql.Identifier(f"p{i}"), pgsql.Literal(c))
        for i, c in enumerate(parts)
    )
    with conn.transaction():
        conn.execute("CREATE EXTENSION IF NOT EXISTS plproxy")
        # Dropping the server drops its user mappings too; the functions name the
        # cluster by name, so they stay.
        conn.execute(pgsql.SQL("DROP SERVER IF EXISTS {} CASCADE").format(
            pgsql.Identifier(SERVER)))
        conn.execute(pgsql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER plproxy OPTIONS ({})")
                     .format(pgsql.Identifier(SERVER), options))
        conn.execute(pgsql.SQL("CREATE USER MAPPING FOR PUBLIC SERVER {}").format(
            pgsql.Identifier(SERVER)))
        conn.execute(pgsql.SQL("GRANT USAGE ON FOREIGN SERVER {} TO PUBLIC").format(
            pgsql.Identifier(SERVER)))
        conn.execute(proxy_script().read_text())
    return f"proxy ready: {len(parts)} shard(s), server {SERVER}"
