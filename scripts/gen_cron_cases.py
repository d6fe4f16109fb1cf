"""Generate tests_sql/502_cron_next_run.sql: expected values for app_jobs.schedule_next_run.

Usage: .venv/bin/python scripts/gen_cron_cases.py > tests_sql/502_cron_next_run.sql

Expected values come from croniter (day_or=True, i.e. Vixie DOM/DOW OR semantics). Every row is
also cross-checked against a small brute-force Vixie cron matcher in this file; the generator
aborts if the two disagree, so expressions where croniter deviates from Vixie cannot slip in.
All inputs are fixed (no randomness); timestamps are UTC and stay within 2023-2032.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

from croniter import croniter

UTC = timezone.utc

# after timestamps used for every expression (chosen near month/year/leap-day boundaries).
COMMON_AFTERS = [
    "2024-02-28 23:59:00",
    "2023-12-31 23:59:59.999999",
    "2025-06-15 12:34:56",
]

# (expression, extra after timestamps specific to what the expression exercises)
CASES: list[tuple[str, list[str]]] = [
    # every minute; exact slot boundaries (strictly after) and sub-minute afters
    ("* * * * *", ["2024-01-01 00:00:00", "2024-01-01 00:00:00.000001", "2030-12-31 23:59:30"]),
    # minute steps, ranges, lists
    ("*/5 * * * *", ["2024-03-10 10:55:00", "2024-03-10 10:57:00", "2024-03-10 23:58:00"]),
    ("*/15 * * * *", ["2024-03-10 10:45:00", "2024-03-10 10:44:59"]),
    ("10-40/10 * * * *", ["2024-05-01 08:40:00", "2024-05-01 08:05:00", "2024-05-01 23:41:00"]),
    ("0,30 * * * *", ["2024-05-01 08:30:00", "2024-05-01 08:29:59"]),
    ("5,10,15-17 * * * *", ["2024-05-01 08:15:00", "2024-05-01 08:17:00"]),
    ("59 * * * *", ["2024-12-31 23:59:00", "2024-12-31 23:58:59"]),
    ("0-4 * * * *", ["2024-07-04 09:04:00", "2024-07-04 09:03:00"]),
    # hours: fixed, lists, ranges, a-b/n steps
    ("0 * * * *", ["2024-07-04 09:00:00", "2024-07-04 23:00:00"]),
    ("30 9 * * *", ["2024-07-04 09:30:00", "2024-07-04 09:29:00"]),
    ("0 9-17 * * *", ["2024-07-04 17:00:00", "2024-07-04 08:59:59"]),
    ("0 9-17/2 * * *", ["2024-07-04 09:00:00", "2024-07-04 15:00:00", "2024-07-04 17:00:00"]),
    ("0 */6 * * *", ["2024-07-04 18:00:00", "2024-07-04 05:59:00"]),
    ("15 0,12 * * *", ["2024-07-04 12:15:00", "2024-07-04 00:14:00"]),
    ("*/20 8-10 * * *", ["2024-07-04 10:40:00", "2024-07-04 07:59:00"]),
    ("0 0-23/8 * * *", ["2024-07-04 16:00:00"]),
    ("45 23 * * *", ["2024-12-31 23:45:00", "2028-02-28 23:46:00"]),
    # day of month, month ends, leap days
    ("0 0 1 * *", ["2024-01-31 12:00:00", "2024-12-01 00:00:00"]),
    ("0 0 15 * *", ["2024-02-15 00:00:00", "2024-02-14 23:59:59"]),
    ("0 0 31 * *", ["2024-04-01 00:00:00", "2024-03-31 00:00:00", "2024-08-31 00:00:00"]),
    ("0 0 30 * *", ["2024-01-30 00:00:00", "2023-02-01 00:00:00"]),
    ("0 0 29 * *", ["2023-01-29 00:00:00", "2024-01-29 00:00:00"]),
    ("0 0 29 2 *", ["2024-02-29 00:00:00", "2023-03-01 00:00:00", "2028-02-28 00:00:00"]),
    ("0 0 28-31 2 *", ["2024-02-29 00:00:00", "2023-02-28 00:00:00"]),
    ("0 12 1,15 * *", ["2024-01-15 12:00:00", "2024-01-31 12:00:00"]),
    ("0 0 1-7 * *", ["2024-01-07 00:00:00"]),
    ("0 0 31 1-12/2 *", ["2024-01-31 00:00:00", "2024-05-31 00:00:00"]),
    # months: numbers, names, ranges, steps, mixed case
    ("0 0 1 jan *", ["2024-01-01 00:00:00", "2023-06-01 00:00:00"]),
    ("0 0 1 JAN *", ["2024-01-01 00:00:00"]),
    ("0 0 1 jan-mar *", ["2024-03-01 00:00:00", "2024-02-01 00:00:00"]),
    ("0 0 1 Jun-Aug *", ["2024-08-01 00:00:00"]),
    ("0 0 1 jan,apr,jul,oct *", ["2024-10-01 00:00:00", "2024-04-01 00:00:00"]),
    ("0 0 1 */3 *", ["2024-10-01 00:00:00", "2024-01-01 00:00:00"]),
    ("0 0 1 2-12/2 *", ["2024-12-01 00:00:00"]),
    ("0 6 * 12 *", ["2024-12-31 06:00:00", "2024-11-30 23:59:00"]),
    ("0 0 * feb *", ["2024-02-29 00:00:00", "2023-02-28 00:00:00"]),
    ("0 0 15 DEC *", ["2024-12-15 00:00:00"]),
    # weekdays: numbers, names, ranges, lists, 0 and 7 both Sunday
    ("0 9 * * 1-5", ["2024-03-08 09:00:00", "2024-03-09 12:00:00"]),
    ("0 9 * * mon-fri", ["2024-03-08 09:00:00", "2024-03-07 08:59:00"]),
    ("0 9 * * MON-FRI", ["2024-03-08 09:00:00"]),
    ("0 10 * * sat,sun", ["2024-03-09 10:00:00", "2024-03-10 10:00:00"]),
    ("0 0 * * sun", ["2024-03-10 00:00:00", "2024-03-09 23:59:59"]),
    ("0 0 * * 0", ["2024-03-10 00:00:00"]),
    ("0 0 * * 7", ["2024-03-10 00:00:00", "2024-03-09 23:59:59"]),
    ("0 0 * * 5-7", ["2024-03-10 00:00:00", "2024-03-08 00:00:00"]),
    ("0 0 * * 1,3,5", ["2024-03-08 00:00:00", "2024-03-06 00:00:00"]),
    ("0 0 * * wed", ["2024-12-31 00:00:00"]),
    ("30 17 * * Fri", ["2024-03-08 17:30:00"]),
    ("0 8 * * 1-5/2", ["2024-03-08 08:00:00", "2024-03-04 08:00:00"]),
    ("0 0 * * 6", ["2024-02-28 00:00:00"]),
    # DOW restricted with month restricted
    ("0 0 * jan-mar sun", ["2024-03-31 00:00:00", "2023-12-31 00:00:00"]),
    ("0 0 * 2 mon", ["2024-02-26 00:00:00", "2023-02-27 00:00:00"]),
    # DOM and DOW both restricted: OR semantics
    ("0 12 13 * 5", ["2024-09-06 12:00:00", "2024-09-13 12:00:00", "2024-12-12 12:00:00"]),
    ("0 0 1 * mon", ["2024-03-31 00:00:00", "2024-04-01 00:00:00", "2024-07-01 00:00:00"]),
    ("0 0 1,15 * 3", ["2024-05-14 00:00:00", "2024-05-15 00:00:00"]),
    ("0 0 31 * sun", ["2024-04-28 00:00:00", "2024-06-30 00:00:00"]),
    ("0 0 29 2 1", ["2023-02-27 00:00:00", "2024-02-26 00:00:00"]),
    ("0 6 1-7 * 1", ["2024-06-03 06:00:00", "2024-06-07 06:00:00"]),
    ("0 0 13 jun-aug fri", ["2024-06-13 00:00:00", "2024-08-30 00:00:00"]),
    # DOM restricted, DOW '*': only DOM; DOM '*', DOW restricted: only DOW (AND with '*')
    ("0 12 13 * *", ["2024-09-06 12:00:00"]),
    ("0 12 * * 5", ["2024-09-06 12:00:00"]),
    # macros
    ("@yearly", ["2024-01-01 00:00:00", "2023-12-31 23:59:59"]),
    ("@annually", ["2024-01-01 00:00:00", "2031-06-01 00:00:00"]),
    ("@monthly", ["2024-02-01 00:00:00", "2024-01-31 23:59:59"]),
    ("@weekly", ["2024-03-10 00:00:00", "2024-03-09 23:59:59"]),
    ("@daily", ["2024-02-29 00:00:00", "2024-02-28 23:59:59"]),
    ("@midnight", ["2024-02-29 00:00:00", "2023-02-28 12:00:00"]),
    ("@hourly", ["2024-02-29 23:00:00", "2024-02-29 22:59:59.5"]),
]


# --- brute-force Vixie cron matcher used only as a cross-check of croniter ---------------------

MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
DAYS = "sun mon tue wed thu fri sat".split()
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _num(tok: str, names: list[str], base: int) -> int:
    low = tok.lower()
    if low in names:
        return names.index(low) + base
    return int(tok)


def _field(text: str, lo: int, hi: int, names: list[str], base: int) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        rng, _, step = part.partition("/")
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            x, y = rng.split("-")
            a, b = _num(x, names, base), _num(y, names, base)
        else:
            a = b = _num(rng, names, base)
        out.update(range(a, b + 1, int(step) if step else 1))
    assert out and min(out) >= lo and max(out) <= hi, text
    return out


def vixie_next(expr: str, after: datetime) -> datetime:
    mi, ho, dom, mon, dow = MACROS.get(expr, expr).split()
    minutes = _field(mi, 0, 59, [], 0)
    hours = _field(ho, 0, 23, [], 0)
    doms = _field(dom, 1, 31, [], 1)
    months = _field(mon, 1, 12, MONTHS, 1)
    dows = {d % 7 for d in _field(dow, 0, 7, DAYS, 0)}
    either = not dom.startswith("*") and not dow.startswith("*")

    def day_ok(d: datetime) -> bool:
        if d.month not in months:
            return False
        in_dom, in_dow = d.day in doms, (d.isoweekday() % 7) in dows
        return (in_dom or in_dow) if either else (in_dom and in_dow)

    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = t.replace(hour=0, minute=0)
    for _ in range(366 * 10):
        if day_ok(day):
            for h in sorted(hours):
                for m in sorted(minutes):
                    cand = day.replace(hour=h, minute=m)
                    if cand >= t:
                        return cand
        day += timedelta(days=1)
    raise ValueError(f"no slot for {expr!r} within 10 years of {after}")


# --- generation ------------------------------------------------------------------------------


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fmt_ts(ts: datetime) -> str:
    frac = f".{ts.microsecond:06d}".rstrip("0") if ts.microsecond else ""
    return ts.strftime("%Y-%m-%d %H:%M:%S") + frac + "+00"


def sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def build_rows() -> list[tuple[str, datetime, datetime]]:
    rows: list[tuple[str, datetime, datetime]] = []
    seen: set[tuple[str, datetime]] = set()
    for expr, extra in CASES:
        for text in COMMON_AFTERS + extra:
            after = parse_ts(text)
            if (expr, after) in seen:
                continue
            seen.add((expr, after))
            try:
                expected = croniter(expr, after, day_or=True).get_next(datetime)
            except Exception as exc:  # croniter gives up on expressions that never fire
                print(f"-- skipped {expr!r} after {text}: {exc}", file=sys.stderr)
                continue
            check = vixie_next(expr, after)
            if expected != check:
                raise SystemExit(
                    f"croniter/Vixie mismatch: {expr!r} after {text}: {expected} vs {check}"
                )
            assert expected > after and 2023 <= expected.year <= 2032, (expr, after, expected)
            rows.append((expr, after, expected.astimezone(UTC)))
    return rows


def main() -> None:
    rows = build_rows()
    lines = [
        "-- schedule_next_run cron slots; generated by scripts/gen_cron_cases.py from croniter",
        "-- Covers steps, lists, ranges, month/day names, 7=Sun, @macros, month ends, leap days,",
        "-- DOM/DOW OR (croniter day_or=True, checked by a Vixie matcher). Do not edit.",
        "BEGIN;",
        "\\ir setup.psql",
        f"SELECT plan({len(rows)});",
        "",
        "SELECT is(app_jobs.schedule_next_run(json_build_object('rule', expr), after), expected,",
        "          format('%s after %s', expr, after))",
        "FROM (VALUES",
    ]
    for i, (expr, after, expected) in enumerate(rows):
        cast = "::timestamptz" if i == 0 else ""
        sep = "," if i < len(rows) - 1 else ""
        lines.append(
            f"    ({sql_str(expr)}, "
            f"{sql_str(fmt_ts(after))}{cast}, {sql_str(fmt_ts(expected))}{cast}){sep}"
        )
    lines += [") AS t(expr, after, expected);", "", "SELECT * FROM finish();", "ROLLBACK;"]
    for line in lines:
        assert len(line) <= 100, line
    print("\n".join(lines))


if __name__ == "__main__":
    main()
