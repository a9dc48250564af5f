"""Run time of funnelfix's funnel query on ClickHouse (chdb) over 1M and 10M
synthetic events, against a plain `SELECT count()` over the same rows.

    cargo run --example hogql_cases > /tmp/cases.json
    python3 tests/hogql/bench.py /tmp/cases.json [rows ...]

Events are generated inside ClickHouse: a quarter as many people as events,
each step's event with its filter values, spread over the lookback window.
Each query is run 3 times; the best time is reported. A bare count() is
answered from metadata, so a count that reads the same columns is shown too.
"""

import json
import sys
import time

from check import literal, to_clickhouse

import chdb.session


def best_of(session, sql, runs=3):
    best = None
    for _ in range(runs):
        start = time.perf_counter()
        result = session.query(sql, "JSONCompact")
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return best, json.loads(str(result))["data"]


def main(path, sizes):
    case = json.load(open(path))[0]
    v = case["values"]
    steps = case["steps"]
    frm, until = v["date_from"], v["date_until"]
    events = "[" + ",".join(literal(s["event"]) for s in steps) + "]"
    props = "[" + ",".join(literal(json.dumps(s["filters"])) for s in steps) + "]"
    session = chdb.session.Session()
    session.query("CREATE DATABASE IF NOT EXISTS bench_db")
    session.query("USE bench_db")
    print("| events | funnel query | SELECT count() | ratio | count() reading the same columns | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for rows in sizes:
        session.query("DROP TABLE IF EXISTS events")
        session.query(
            "CREATE TABLE events (person_id String, event String, timestamp DateTime64(3, 'UTC'), "
            "properties String) ENGINE = MergeTree ORDER BY (timestamp)"
        )
        people = max(rows // 4, 1)
        # Step k for row n: people go deeper with lower probability.
        session.query(
            f"""INSERT INTO events
            SELECT
                toString(number % {people}) AS person_id,
                {events}[step + 1] AS event,
                toDateTime64({frm} + (cityHash64(number % {people}) % ({until} - {frm})) + step * 600 + intDiv(number, {people}) * 7, 3, 'UTC') AS timestamp,
                {props}[step + 1] AS properties
            FROM (SELECT number, least(intDiv(number, {people}), {len(steps) - 1}) AS step FROM numbers({rows}))"""
        )
        query = to_clickhouse(case["query"], v)
        funnel, data = best_of(session, query)
        # A bare count() is answered from the table's metadata; the second
        # count reads every column the funnel query reads.
        count, _ = best_of(session, "SELECT count() FROM events")
        scan, _ = best_of(session, "SELECT count() FROM events WHERE NOT ignore(person_id, event, timestamp, properties)")
        print(
            f"| {rows:,} | {funnel * 1000:.0f} ms | {count * 1000:.1f} ms | {funnel / count:.0f}× "
            f"| {scan * 1000:.0f} ms | {funnel / scan:.1f}× |"
        )
        sys.stdout.flush()
        assert data, "the funnel query found no entrants"


if __name__ == "__main__":
    main(sys.argv[1], [int(x) for x in sys.argv[2:]] or [1_000_000, 10_000_000])
