"""Every ClickHouse statement Tollgate sends must also run on current ClickHouse.

The dev stack runs Debian's ClickHouse 18.16; production users run something
recent. This check executes the whole SQL catalog (`tollgate sql-catalog`:
migrations first, in order, then every report query with sample values) in
chDB, an in-process build of current ClickHouse, inside one fresh database.

Inputs (environment):
  TOLLGATE_BIN          the built `tollgate` binary (dev/test sets it)
  TOLLGATE_SQL_CATALOG  optional: a JSON file to use instead of running the
                        binary (same format: [{"name": ..., "sql": ...}])
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest


def _clip(text: str, limit: int = 3000) -> str:
    if len(text) <= limit:
        return text
    return text[: limit // 2] + "\n[...]\n" + text[-limit // 2 :]


def _load_catalog() -> tuple[list[dict], str | None]:
    """Return (entries, error). Never raises: an error becomes a failing test."""
    path = os.environ.get("TOLLGATE_SQL_CATALOG")
    try:
        if path:
            with open(path, encoding="utf-8") as f:
                raw = f.read()
            source = path
        else:
            binary = os.environ.get("TOLLGATE_BIN")
            if not binary:
                return [], "TOLLGATE_BIN is not set (dev/test sets it to the built tollgate binary)"
            if not os.access(binary, os.X_OK):
                return [], f"TOLLGATE_BIN={binary} is not an executable file"
            # TOLLGATE_* variables are configuration overrides for the binary
            # (TOLLGATE_<SECTION>__<KEY>); keep this check's own out of its way.
            env = {k: v for k, v in os.environ.items() if k not in ("TOLLGATE_BIN", "TOLLGATE_SQL_CATALOG")}
            env["RUST_BACKTRACE"] = "0"
            env["RUST_LIB_BACKTRACE"] = "0"
            proc = subprocess.run(
                [binary, "sql-catalog"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if proc.returncode != 0:
                return [], (
                    f"`{binary} sql-catalog` exited with {proc.returncode}:\n"
                    f"{_clip(proc.stderr.strip())}"
                )
            raw = proc.stdout
            source = f"`{binary} sql-catalog`"
        entries = json.loads(raw)
    except Exception as exc:  # noqa: BLE001 - reported as a test failure
        return [], f"could not read the SQL catalog: {type(exc).__name__}: {exc}"
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("sql"), str)
        for e in entries
    ):
        return [], f'{source} is not a JSON list of {{"name": str, "sql": str}} objects'
    return entries, None


CATALOG, CATALOG_ERROR = _load_catalog()


def _ids(entries: list[dict]) -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for i, e in enumerate(entries):
        name = e["name"]
        n = seen.get(name, 0)
        seen[name] = n + 1
        ids.append(f"{i:03d}:{name}" + (f"#{n}" if n else ""))
    return ids


@pytest.fixture(scope="module")
def chdb_db():
    """One chDB session with a fresh database selected by USE."""
    from chdb import session as chdb_session

    sess = chdb_session.Session()
    name = f"tollgate_compat_{uuid.uuid4().hex[:12]}"
    sess.query(f"CREATE DATABASE {name}")
    sess.query(f"USE {name}")
    failed: list[str] = []
    try:
        yield sess, failed
    finally:
        try:
            sess.query(f"DROP DATABASE IF EXISTS {name}")
        finally:
            sess.close()


def test_catalog_is_readable_and_not_empty():
    assert CATALOG_ERROR is None, CATALOG_ERROR
    assert CATALOG, "the SQL catalog is empty: a compatibility check that checks nothing is a defect"


@pytest.mark.parametrize("entry", CATALOG, ids=_ids(CATALOG))
def test_statement_runs_on_current_clickhouse(chdb_db, entry):
    sess, failed = chdb_db
    sql = entry["sql"].strip().rstrip(";").strip()
    assert sql, f"statement {entry['name']!r} is empty"
    error = None
    try:
        sess.query(sql)
    except Exception as exc:  # chdb raises ChdbError (a RuntimeError) on SQL errors
        error = str(exc).strip()
    if error is not None:
        failed.append(entry["name"])
        earlier = f"\n(earlier failures that may cascade: {', '.join(failed[:-1])})" if failed[:-1] else ""
        pytest.fail(
            f"statement {entry['name']!r} fails on ClickHouse (chDB) {_engine_version(sess)}:\n"
            f"{error}\n--- SQL ---\n{sql}{earlier}",
            pytrace=False,
        )


def _engine_version(sess) -> str:
    try:
        return str(sess.query("SELECT version()", "TSV")).strip()
    except Exception:  # noqa: BLE001
        return "?"


def _type7(values: list[float], q: float) -> float:
    """numpy.percentile(values, 100 q), method "linear" (Hyndman & Fan type 7)."""
    s = sorted(values)
    h = (len(s) - 1) * q
    lo = int(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def _assert_row_percentiles(row: dict, model: str, values: list[int], bound: float) -> None:
    """A report row of the sample calls (TTFT a quarter of each duration):
    its count, and each percentile interpolated from its order statistics
    within `bound` of numpy's (0: exactly)."""
    assert int(row["call_count"]) == len(values)
    for name_, stats, vals in (
        ("duration", row["duration_order_stats"], values),
        ("ttft", row["ttft_order_stats"], [v // 4 for v in values]),
    ):
        n = len(vals)
        for i, q in enumerate((0.5, 0.9, 0.95, 0.99)):
            h = (n - 1) * q
            lo, hi = stats[2 * i], stats[2 * i + 1]
            reported = (lo + (h - int(h)) * (hi - lo)) / 1_000
            exact = _type7([float(v) for v in vals], q)
            assert abs(reported - exact) <= exact * bound + 1e-9, (model, name_, q, reported, exact)


def test_latency_percentiles_on_current_clickhouse():
    """The latency report's SQL gives the same percentiles on current
    ClickHouse as the tests require of 18.16: numpy's exactly for a small
    group, within 1/256 above 1000 values (docs/architecture.md, "Latency
    percentiles"). The catalog check above only proves the SQL parses."""
    assert CATALOG_ERROR is None, CATALOG_ERROR
    from chdb import session as chdb_session

    sess = chdb_session.Session()
    name = f"tollgate_latency_{uuid.uuid4().hex[:12]}"
    try:
        sess.query(f"CREATE DATABASE {name}")
        sess.query(f"USE {name}")
        for entry in CATALOG:
            if entry["name"][:4].isdigit():  # migrations, in order
                sess.query(entry["sql"].strip().rstrip(";"))
        # The catalog's sample window is 2026-01-01T00:00Z + 1 h.
        tail = [400 + i * 12 for i in range(99)] + [1_749, 1_782, 60_002]
        big = [7] * 985 + [8] * 1_015 + [120 + (i * 7_919) % 40_000 for i in range(1_500)]
        rows = []
        for model, values in (("tail", tail), ("big", big)):
            for i, ms in enumerate(values):
                rows.append(f"('{model}-{i}', 'ai.call.completed', toDateTime({1_767_225_600 + i % 3_600}, 'UTC'), "
                            f"'openai', '{model}', {ms}, 1, {ms // 4}, 'success')")
        sess.query(
            "INSERT INTO calls (event_id, kind, occurred_at, provider, model, duration_ms, has_ttft, ttft_ms, outcome) VALUES "
            + ", ".join(rows)
        )

        def answer(statement: str) -> list[dict]:
            sql = next(e["sql"] for e in CATALOG if e["name"] == statement)
            result = sess.query(sql.strip().rstrip(";"), "JSONEachRow")
            return [json.loads(line) for line in str(result).strip().splitlines()]

        # The kept values answer every group; the histogram (migration
        # 0036's bucket rows) answers, per metric, the groups above 1000
        # values, and its order statistics replace the kept values' there.
        got = {r["key_model"]: r for r in answer("latency.totals")}
        histograms = answer("latency.totals.histogram")
        # The series' histogram folds rows as read (no inner GROUP BY per
        # bucket); over one bucket holding the whole window it must give
        # the totals' order statistics to the last digit.
        one_bucket = answer("latency.series.histogram.one_bucket")
        # Read from the calls themselves, every value is sorted: numpy's
        # percentiles exactly at any group size, and the window's count
        # that chooses this source.
        from_calls = {r["key_model"]: r for r in answer("latency.calls.totals")}
        # Counted per distinct value first, then found in the running
        # counts: the same order statistics.
        counted = {r["key_model"]: r for r in answer("latency.calls.counted.totals")}
        in_window = answer("latency.calls_in_window")
    finally:
        sess.query(f"DROP DATABASE IF EXISTS {name}")
        sess.close()
    assert sorted((h["key_model"], int(h["metric"])) for h in histograms) == [("big", 0), ("big", 1)]
    assert [(h["key_model"], int(h["metric"]), h["order_stats"]) for h in one_bucket] == [
        (h["key_model"], int(h["metric"]), h["order_stats"]) for h in histograms
    ]
    assert {int(h["bucket_start"]) for h in one_bucket} == {1_767_225_600}
    for h in histograms:
        field = ("duration_order_stats", "ttft_order_stats")[int(h["metric"])]
        got[h["key_model"]][field] = h["order_stats"]
        assert int(h["value_count"]) == len(big)
    for model, values, bound in (("tail", tail, 0.0), ("big", big, 1 / 256)):
        _assert_row_percentiles(got[model], model, values, bound)
    assert [(int(r["calls"]), int(r["folded"])) for r in in_window] == [(len(tail) + len(big),) * 2]
    for model, values in (("tail", tail), ("big", big)):
        for rows in (from_calls, counted):
            assert int(rows[model]["ttft_count"]) == len(values)
            assert int(rows[model]["call_count"]) == len(values)
            _assert_row_percentiles(rows[model], model, values, 0.0)
    # The group: p99 is 0.99 of the way from 1749 to 1782 ms.
    stats = got["tail"]["duration_order_stats"]
    assert (stats[6], stats[7]) == (1_749_000, 1_782_000)
