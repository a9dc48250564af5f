"""What funnelfix's queries cost on a table laid out like PostHog's, against
the floor: a plain scan of only the funnel's events over the same range.

    cargo run --example hogql_cases > /tmp/cases.json
    python3 tests/hogql/bench.py /tmp/cases.json --before tests/hogql/before.json [--data DIR] [rows ...]

rows defaults to 10000000 50000000. The table is generated once per size in
DIR (default /var/tmp/funnelfix-bench; 1.4 GB for 10M and 50M events) and
reused while the cases' time range is unchanged; generating 50M events takes
about 5 minutes on 2 cores. cases.json holds every query funnelfix sends
(examples/hogql_cases.rs); before.json the same queries as funnelfix sent
them before the `event IN (...)` prefilter, from examples/hogql_cases.rs run
on commit e79f1a9.

The table: MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (toDate(timestamp),
event, cityHash64(person_id)), as PostHog's sharded_events (which leads with
team_id, one value here), with a materialized column for each property the
queries filter on (`mat_$pathname`, as PostHog Cloud has). person_id is a
UUID, properties a JSON string of about 300 bytes as posthog-js sends. Events
are spread over the cases' whole time range (about 45 days), one person per
10 events. 15% are funnel steps: journeys that view / (and then, with falling
probability, /pricing, signup_started, signup_completed). The other 85%:
$autocapture 40%, $pageleave 15%, $pageview of other paths 15%, six custom
events 15%.

Property access is run both ways PostHog prints `properties.x` for
ClickHouse: from its materialized column, `nullIf(nullIf(mat_x, ''), 'null')`,
and, for a property without one, from the JSON,
`replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(properties, 'x'), ''), 'null'), '^"|"$', '')`;
comparisons with a nullable side become `ifNull(equals(a, b), 0)`.

For each query it reports the best wall time of 7 runs (max_threads = 2,
warm page cache; the five queries take turns, so a busy moment on the
machine does not fall on one of them) and ratios of wall times, with the
ratio of CPU times (all threads) in brackets, which a busy machine disturbs
less; of:
- before: the query as funnelfix sent it before the prefilter;
- after: the query as funnelfix sends it;
- floor: SELECT count(), uniq(person_id) over the rows with the query's
  event names in its time range, reading the same columns (person_id, event,
  timestamp, and the property's column or the JSON): what any query for
  these events must read. uniq is approximate: it keeps a sample of at most
  65536 hashes, so it does no per-person work;
- per-person floor: the same scan grouped by person_id (exact), the least a
  count of people must do;
- per-person floor with step filters: the query's inner SELECT (every
  step's condition once per row, only the rows that match a step) grouped
  by person_id: the least a funnel over these steps must do, whatever it
  then does per person.
Before and after must return the same rows; the script stops if not.
"""

import json
import re
import resource
import sys
import time

from check import literal

import chdb.session

LAYOUT = 4  # bump when the generated data changes
RUNS = 7

NOISE_PATHS = ["/", "/pricing", "/blog/launch", "/docs", "/about", "/changelog", "/careers", "/pricing/enterprise"]
OTHER_PAGES = NOISE_PATHS[2:]
CUSTOM = ["$web_vitals", "$rageclick", "feature_used", "$identify", "survey sent", "$groupidentify"]


def properties(path, extra=""):
    """posthog-js's usual properties, as a ClickHouse string expression."""
    return (
        "concat('{\"$os\":\"Mac OS X\",\"$browser\":\"Chrome\",\"$device_type\":\"Desktop\","
        "\"$current_url\":\"https://acme.example', " + path + ", '\",\"$host\":\"acme.example\","
        "\"$pathname\":\"', " + path + ", '\",\"$referrer\":\"$direct\",\"$lib\":\"web\","
        "\"$lib_version\":\"1.236.0\"" + extra + ",\"$session_id\":\"', toString(session), '\"}')"
    )


def uuid(expr):
    return f"toUUID(concat('00000000-0000-4000-8000-', leftPad(lower(hex({expr})), 12, '0')))"


def mat(name):
    return f"`mat_{name}`"


def generate(session, rows, start, end, props):
    span = end - start
    people = max(rows // 10, 1)
    funnel_rows = rows * 15 // 100
    # Journey depth: all view /, 60% /pricing, 30% start signup, 20% finish.
    journeys = max(int(funnel_rows / 2.1), 1)
    session.query("DROP TABLE IF EXISTS events")
    session.query("DROP TABLE IF EXISTS meta")
    materialized = "".join(
        f", {mat(p)} String MATERIALIZED replaceRegexpAll(JSONExtractRaw(properties, {literal(p)}), '^\"|\"$', '')"
        for p in props
    )
    session.query(
        "CREATE TABLE events (event String, timestamp DateTime64(6, 'UTC'), person_id UUID, properties String"
        f"{materialized}) ENGINE = MergeTree PARTITION BY toYYYYMM(timestamp) "
        "ORDER BY (toDate(timestamp), event, cityHash64(person_id))"
    )
    steps = "['$pageview', '$pageview', 'signup_started', 'signup_completed']"
    paths = "['/', '/pricing', '/signup', '/signup']"
    session.query(
        f"""INSERT INTO events
        SELECT
            {steps}[k + 1] AS event,
            toDateTime64({start} + cityHash64(j, 8) % {span} + k * 600 + if(k > 0, cityHash64(j, 9) % 300, 0), 6, 'UTC') AS timestamp,
            {uuid(f"cityHash64(j, 7) % {people}")} AS person_id,
            {properties(f"{paths}[k + 1]")} AS properties
        FROM (
            SELECT number % {journeys} AS j, intDiv(number, {journeys}) AS k, cityHash64(j, 5) % 100 AS h,
                   cityHash64(j, 6) AS session
            FROM numbers({journeys * 4})
        )
        WHERE k < 1 + (h < 60) + (h < 30) + (h < 20)
        SETTINGS max_threads = 2"""
    )
    funnel_rows = int(json.loads(str(session.query("SELECT count() FROM events", "JSONCompact")))["data"][0][0])
    noise = rows - funnel_rows
    noise_paths = "[" + ",".join(literal(p) for p in NOISE_PATHS) + "]"
    other_pages = "[" + ",".join(literal(p) for p in OTHER_PAGES) + "]"
    custom = "[" + ",".join(literal(e) for e in CUSTOM) + "]"
    noise_properties = properties("path", ',"$event_type":"click","$el_text":"Start free trial"')
    session.query(
        f"""INSERT INTO events
        SELECT
            multiIf(b < 40, '$autocapture', b < 55, '$pageleave', b < 70, '$pageview',
                    {custom}[cityHash64(n, 4) % {len(CUSTOM)} + 1]) AS event,
            toDateTime64({start} + cityHash64(n, 2) % {span}, 6, 'UTC') AS timestamp,
            {uuid(f"cityHash64(n, 1) % {people}")} AS person_id,
            {noise_properties} AS properties
        FROM (
            SELECT number AS n, cityHash64(n, 3) % 85 AS b, cityHash64(n, 10) AS session,
                   if(b >= 55 AND b < 70, {other_pages}[cityHash64(n, 11) % {len(OTHER_PAGES)} + 1],
                      {noise_paths}[cityHash64(n, 11) % {len(NOISE_PATHS)} + 1]) AS path
            FROM numbers({noise})
        )
        SETTINGS max_threads = 2"""
    )
    session.query("OPTIMIZE TABLE events FINAL")
    session.query(
        "CREATE TABLE meta (layout UInt32, rows UInt64, start Int64, end Int64, props String) "
        "ENGINE = MergeTree ORDER BY tuple()"
    )
    session.query(f"INSERT INTO meta VALUES ({LAYOUT}, {rows}, {start}, {end}, {literal(json.dumps(props))})")


def ready(session, rows, start, end, props):
    try:
        got = json.loads(str(session.query("SELECT layout, rows, start, end, props FROM meta", "JSONCompact")))["data"]
    except Exception:
        return False
    return [[int(r[0]), int(r[1]), int(r[2]), int(r[3]), r[4]] for r in got] == [
        [LAYOUT, rows, start, end, json.dumps(props)]
    ]


def property_sql(name, materialized):
    if materialized:
        return f"nullIf(nullIf({mat(name)}, ''), 'null')"
    return f"replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(properties, {literal(name)}), ''), 'null'), '^\"|\"$', '')"


def as_posthog(query, values, materialized):
    """What PostHog sends ClickHouse for the HogQL (the parts that cost)."""
    sql = re.sub(r"((?:properties\.\$?\w+)|\bf\d+) = (\{\w+\})", r"ifNull(equals(\1, \2), 0)", query)
    sql = re.sub(r"properties\.(\$?\w+)", lambda m: property_sql(m.group(1), materialized), sql)
    return re.sub(r"\{(\w+)\}", lambda m: literal(values[m.group(1)]), sql)


def run(session, queries):
    """Each query RUNS times, taking turns: the best wall and CPU time of
    each, and its rows. CPU time is this process's, all threads."""
    best = {k: [float("inf"), float("inf")] for k in queries}
    rows = {}
    for _ in range(RUNS):
        for k, sql in queries.items():
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            result = json.loads(str(session.query(sql + " SETTINGS max_threads = 2", "JSONCompact")))
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            used = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
            best[k] = [min(best[k][0], wall), min(best[k][1], used)]
            rows[k] = result["data"]
    return best, rows


def inner_select(query):
    """The query's inner SELECT: every step's condition once per row, only
    the rows that match a step."""
    start = query.index("FROM (\n        SELECT") + len("FROM (")
    end = query.index("\n    )\n    GROUP BY person_id")
    return query[start:end]


def ms(seconds):
    return f"{seconds * 1000:,.0f} ms"


def main(argv):
    data = "/var/tmp/funnelfix-bench"
    before_path = None
    for flag in ("--data", "--before"):
        if flag in argv:
            i = argv.index(flag)
            if flag == "--data":
                data = argv[i + 1]
            else:
                before_path = argv[i + 1]
            del argv[i:i + 2]
    if before_path is None:
        sys.exit("--before tests/hogql/before.json is required")
    path, sizes = argv[0], [int(x) for x in argv[1:]] or [10_000_000, 50_000_000]
    cases = json.load(open(path))
    before = {c["name"]: c for c in json.load(open(before_path))}
    start = min(c["values"]["date_from"] for c in cases) - 2 * 86400
    end = max(c["values"]["date_until"] for c in cases)
    props = sorted({p for c in cases for s in c["steps"] for p in s["filters"]})
    session = chdb.session.Session(data)
    print(
        "| events | property | query | before | after | floor | before ÷ floor | after ÷ floor "
        "| per-person floor | after ÷ it | per-person floor with step filters | after ÷ it |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows in sizes:
        session.query(f"CREATE DATABASE IF NOT EXISTS bench_{rows}")
        session.query(f"USE bench_{rows}")
        if not ready(session, rows, start, end, props):
            began = time.perf_counter()
            print(f"generating {rows:,} events in {data} ...", file=sys.stderr)
            generate(session, rows, start, end, props)
            print(f"generated in {time.perf_counter() - began:.0f} s", file=sys.stderr)
        for materialized in (True, False):
            for case in cases:
                v = case["values"]
                old_case = before[case["name"]]
                assert old_case["values"] == v, f"{case['name']}: before.json is for other times"
                names = sorted({s["event"] for s in case["steps"]})
                used = sorted({p for s in case["steps"] for p in s["filters"]})
                columns = [mat(p) for p in used] if materialized else ["properties"]
                where = (
                    f"WHERE timestamp >= fromUnixTimestamp({v['date_from']}) "
                    f"AND timestamp <= fromUnixTimestamp({v['date_until']}) "
                    f"AND event IN ({', '.join(literal(n) for n in names)}) "
                    f"AND NOT ignore({', '.join(columns)})"
                )
                floor_sql = f"SELECT count(), uniq(person_id) FROM events {where}"
                person_sql = (
                    "SELECT count(), sum(n) FROM "
                    f"(SELECT person_id, count() AS n FROM events {where} GROUP BY person_id)"
                )
                filters_sql = as_posthog(
                    "SELECT count(), sum(n) FROM "
                    f"(SELECT person_id, count() AS n FROM ({inner_select(case['query'])}) GROUP BY person_id)",
                    v,
                    materialized,
                )
                (times, got) = run(
                    session,
                    {
                        "before": as_posthog(old_case["query"], v, materialized),
                        "after": as_posthog(case["query"], v, materialized),
                        "floor": floor_sql,
                        "person": person_sql,
                        "filters": filters_sql,
                    },
                )
                assert got["after"] == got["before"], f"{case['name']}: the counts changed"
                assert got["after"], f"{case['name']}: no entrants"
                wall = {k: w for k, (w, _) in times.items()}
                cpu = {k: c for k, (_, c) in times.items()}

                def ratio(a, b):
                    return f"{wall[a] / wall[b]:.1f}× ({cpu[a] / cpu[b]:.1f}×)"

                print(
                    f"| {rows / 1e6:.0f}M | {'materialized' if materialized else 'JSON'} | {case['name']} "
                    f"| {ms(wall['before'])} | {ms(wall['after'])} | {ms(wall['floor'])} "
                    f"| {ratio('before', 'floor')} | **{ratio('after', 'floor')}** "
                    f"| {ms(wall['person'])} | {ratio('after', 'person')} "
                    f"| {ms(wall['filters'])} | {ratio('after', 'filters')} |"
                )
                sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
