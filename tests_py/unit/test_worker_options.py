"""Option parsing without a server: pgjobs-worker's options from the command line and
the environment, --prepare-threshold, how a conninfo is shown in logs (no password), and
the timeout settings the worker sends."""

from __future__ import annotations

import argparse

import pytest
from pgjobs.connection import describe, first_line, prepare_threshold, resolve_url
from pgjobs.connector import milliseconds
from pgjobs.worker_cli import build_parser


def test_metrics_options_from_the_environment(monkeypatch):
    monkeypatch.setenv("PGJOBS_METRICS_PORT", "9187")
    monkeypatch.setenv("PGJOBS_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("PGJOBS_STATEMENT_TIMEOUT", "12.5")
    monkeypatch.setenv("PGJOBS_IDLE_IN_TRANSACTION_TIMEOUT", "0")
    args = build_parser().parse_args([])
    assert (args.metrics_port, args.metrics_host) == (9187, "0.0.0.0")
    assert (args.statement_timeout, args.idle_in_transaction_timeout) == (12.5, 0.0)
    monkeypatch.setenv("PGJOBS_METRICS_PORT", "")
    monkeypatch.delenv("PGJOBS_STATEMENT_TIMEOUT")
    args = build_parser().parse_args([])
    assert args.metrics_port is None
    assert args.statement_timeout == 60.0
    assert build_parser().parse_args(["--metrics-port", "0"]).metrics_port == 0


def test_prepare_threshold():
    assert prepare_threshold("none") is None
    assert prepare_threshold(" Off ") is None
    assert prepare_threshold("0") == 0
    assert prepare_threshold("5") == 5
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            prepare_threshold(bad)


def test_database_url_resolution_and_description(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "dbname=fromenv")
    assert resolve_url("dbname=given") == "dbname=given"
    assert resolve_url(None) == "dbname=fromenv"
    shown = describe("host=h dbname=d user=u password=secret")
    assert "secret" not in shown and "dbname=d" in shown
    assert describe("") == "(PG* environment)"
    assert describe("host='unclosed") == "<unparseable database url>"
    assert first_line(RuntimeError("one\ntwo")) == "one"
    assert first_line(RuntimeError()) == "RuntimeError"


def test_timeouts_in_milliseconds():
    assert [milliseconds(s) for s in (None, 0, -1, 0.0001, 2.5, 60)] == [
        "0", "0", "0", "1", "2500", "60000"]
