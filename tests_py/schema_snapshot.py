"""Canonical, OID-free description of an extension's schema, for comparing two databases.

`snapshot(conn)` reads the catalogs of the connected database and returns a dict mapping a
section name to a sorted list of text items:

    extension     name, version, schema, relocatable
    schema        the schema itself: ACL and comment
    relations     tables, views, materialized views, composite types, foreign tables:
                  kind, persistence, row-level security, options, ACL, comment
    columns       per relation, in order: position, name, type, NOT NULL, default,
                  generated expression, identity, non-default collation, ACL, comment
    constraints   pg_get_constraintdef of table and domain constraints, with flags, comment
    indexes       pg_get_indexdef, validity, clustering, comment
    triggers      pg_get_triggerdef, enabled state, comment
    functions     pg_get_functiondef (aggregates: their parts), ACL, comment
    views         pg_get_viewdef of views and materialized views
    sequences     type, start, increment, bounds, cache, cycle, owning column, comment
    types         enums (labels in order), domains, ranges, base types, with comments
    policies      row-level security policies
    rules         rewrite rules other than views' own
    config        tables registered with pg_extension_config_dump (pg_extension.extconfig)
    members       every object that belongs to the extension (pg_depend deptype 'e'),
                  as pg_describe_object names it

Everything is rendered with search_path = pg_catalog, so every name of the schema comes
out schema-qualified and the result does not depend on the caller's search_path. Column
order is part of the description: a fresh install and an upgraded one must agree on it,
since `SELECT *` and functions returning a table's row type expose it.

`diff(a, b)` renders the differences between two snapshots as a unified diff.
"""

from __future__ import annotations

import difflib
from typing import Any

Snapshot = dict[str, list[str]]

_SECTIONS: dict[str, str] = {
    "extension": """
        SELECT format('%I version=%s schema=%s relocatable=%s',
            e.extname, e.extversion, e.extnamespace::regnamespace, e.extrelocatable)
        FROM pg_extension AS e WHERE e.extname = {ext}
    """,
    "schema": """
        SELECT format('%I acl=%s comment=%L',
            n.nspname, n.nspacl, obj_description(n.oid, 'pg_namespace'))
        FROM pg_namespace AS n WHERE n.nspname = {schema}
    """,
    "relations": """
        SELECT format('%I.%I kind=%s persistence=%s rls=%s force_rls=%s options=%s acl=%s'
                || ' comment=%L',
            n.nspname, c.relname, c.relkind, c.relpersistence, c.relrowsecurity,
            c.relforcerowsecurity, c.reloptions, c.relacl, obj_description(c.oid, 'pg_class'))
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = {schema} AND c.relkind IN ('r', 'p', 'v', 'm', 'c', 'f')
    """,
    "columns": """
        SELECT format('%I.%I #%s %I %s not_null=%s default=%s generated=%L identity=%L'
                || ' collation=%s acl=%s comment=%L',
            n.nspname, c.relname,
            lpad((row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum))::text, 3, '0'),
            a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
            pg_get_expr(d.adbin, d.adrelid), a.attgenerated, a.attidentity,
            CASE WHEN a.attcollation <> t.typcollation THEN (
                SELECT quote_ident(co.collname) FROM pg_collation AS co
                WHERE co.oid = a.attcollation) END,
            a.attacl, col_description(c.oid, a.attnum))
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        JOIN pg_type AS t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = {schema} AND c.relkind IN ('r', 'p', 'v', 'm', 'c', 'f')
            AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "constraints": """
        SELECT format('%I on %s: type=%s %s deferrable=%s deferred=%s validated=%s'
                || ' comment=%L',
            con.conname,
            CASE WHEN con.conrelid <> 0 THEN con.conrelid::regclass::text
                 ELSE 'domain ' || con.contypid::regtype::text END,
            con.contype, pg_get_constraintdef(con.oid), con.condeferrable, con.condeferred,
            con.convalidated, obj_description(con.oid, 'pg_constraint'))
        FROM pg_constraint AS con JOIN pg_namespace AS n ON n.oid = con.connamespace
        WHERE n.nspname = {schema}
    """,
    "indexes": """
        SELECT format('%s valid=%s clustered=%s replica_identity=%s comment=%L',
            pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisclustered, i.indisreplident,
            obj_description(i.indexrelid, 'pg_class'))
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = {schema}
    """,
    "triggers": """
        SELECT format('%s enabled=%s comment=%L',
            pg_get_triggerdef(t.oid), t.tgenabled, obj_description(t.oid, 'pg_trigger'))
        FROM pg_trigger AS t
        JOIN pg_class AS c ON c.oid = t.tgrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = {schema} AND NOT t.tgisinternal
    """,
    "functions": """
        SELECT format(E'%s kind=%s acl=%s comment=%L\n%s',
            p.oid::regprocedure, p.prokind, p.proacl, obj_description(p.oid, 'pg_proc'),
            CASE WHEN p.prokind = 'a' THEN (
                SELECT format('aggregate kind=%s transfn=%s finalfn=%s combinefn=%s'
                        || ' stype=%s initval=%L sortop=%s',
                    ag.aggkind, ag.aggtransfn, ag.aggfinalfn, ag.aggcombinefn,
                    ag.aggtranstype::regtype, ag.agginitval, ag.aggsortop::regoperator)
                FROM pg_aggregate AS ag WHERE ag.aggfnoid = p.oid)
            ELSE pg_get_functiondef(p.oid) END)
        FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = {schema}
    """,
    "views": """
        SELECT format(E'%I.%I kind=%s\n%s',
            n.nspname, c.relname, c.relkind, pg_get_viewdef(c.oid, true))
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = {schema} AND c.relkind IN ('v', 'm')
    """,
    "sequences": """
        SELECT format('%I.%I type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s'
                || ' owned_by=%s comment=%L',
            n.nspname, c.relname, s.seqtypid::regtype, s.seqstart, s.seqincrement,
            s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
            (SELECT format('%s.%I', d.refobjid::regclass, a.attname)
             FROM pg_depend AS d
             JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')),
            obj_description(c.oid, 'pg_class'))
        FROM pg_sequence AS s
        JOIN pg_class AS c ON c.oid = s.seqrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = {schema}
    """,
    "types": """
        SELECT format('%s type=%s %s acl=%s comment=%L',
            t.oid::regtype, t.typtype,
            CASE t.typtype
                WHEN 'e' THEN (
                    SELECT 'labels=' || string_agg(quote_literal(e.enumlabel), ','
                                                   ORDER BY e.enumsortorder)
                    FROM pg_enum AS e WHERE e.enumtypid = t.oid)
                WHEN 'd' THEN format('base=%s not_null=%s default=%s',
                    format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault)
                WHEN 'r' THEN (
                    SELECT format('subtype=%s', r.rngsubtype::regtype)
                    FROM pg_range AS r WHERE r.rngtypid = t.oid)
                ELSE format('input=%s output=%s', t.typinput, t.typoutput)
            END,
            t.typacl, obj_description(t.oid, 'pg_type'))
        FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
        WHERE n.nspname = {schema}
            AND t.typtype IN ('b', 'd', 'e', 'r')  -- multiranges come with their range
            AND NOT (t.typtype = 'b' AND t.typcategory = 'A')  -- implicit array types
    """,
    "policies": """
        SELECT format('%I on %s: cmd=%s permissive=%s roles=%s using=%s check=%s',
            pol.polname, pol.polrelid::regclass, pol.polcmd, pol.polpermissive,
            pol.polroles::regrole[], pg_get_expr(pol.polqual, pol.polrelid),
            pg_get_expr(pol.polwithcheck, pol.polrelid))
        FROM pg_policy AS pol
        JOIN pg_class AS c ON c.oid = pol.polrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = {schema}
    """,
    "rules": """
        SELECT format('%I on %I.%I: %s', r.rulename, r.schemaname, r.tablename, r.definition)
        FROM pg_rules AS r WHERE r.schemaname = {schema}
    """,
    "config": """
        SELECT format('%s condition=%L', cfg.tbl::regclass, cfg.cond)
        FROM pg_extension AS e,
            unnest(e.extconfig, e.extcondition) AS cfg (tbl, cond)
        WHERE e.extname = {ext}
    """,
    "members": """
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid)
        FROM pg_depend AS d JOIN pg_extension AS e ON e.oid = d.refobjid
        WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
            AND e.extname = {ext}
    """,
}

SECTIONS = tuple(_SECTIONS)


def _query(name: str) -> str:
    """The section's SQL with its {schema} and {ext} slots as psycopg parameters."""
    return (
        _SECTIONS[name]
        .replace("%", "%%")
        .replace("{schema}", "%(schema)s")
        .replace("{ext}", "%(ext)s")
    )


def snapshot(conn: Any, schema: str = "app_jobs", extension: str = "pgjobs") -> Snapshot:
    """Describe `schema` and `extension` in the database of psycopg connection `conn`."""
    params = {"schema": schema, "ext": extension}
    old_path = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
    conn.execute("SELECT set_config('search_path', 'pg_catalog', false)")
    try:
        return {
            name: sorted(row[0] for row in conn.execute(_query(name), params))
            for name in SECTIONS
        }
    finally:
        conn.execute("SELECT set_config('search_path', %s, false)", (old_path,))


def render(snap: Snapshot) -> list[str]:
    """One line per line of every item, prefixed with its section."""
    return [
        f"{section}: {line}"
        for section in SECTIONS
        for item in snap.get(section, [])
        for line in item.splitlines() or [""]
    ]


def diff(
    expected: Snapshot, actual: Snapshot, names: tuple[str, str] = ("fresh", "upgraded")
) -> str:
    """Unified diff of two snapshots ('' when they are equal)."""
    return "\n".join(
        difflib.unified_diff(render(expected), render(actual), *names, n=2, lineterm="")
    )
