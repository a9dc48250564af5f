"""What funnelfix's queries cost on a table laid out like PostHog's, against
the floor: a plain scan of only the events each query must read over the
same range.

    cargo run --example hogql_cases > /tmp/cases.json
    python3 tests/hogql/bench.py /tmp/cases.json [--only funnel|evidence] [--compare OLD.json] [--data DIR] [rows ...]

rows defaults to 10000000 50000000. The table is generated once per size in
DIR (default /var/tmp/funnelfix-bench; about 3 GB for 10M and 50M events)
and reused while the cases' time range and the properties they read are
unchanged; generating 50M events takes about 5 minutes on 2 cores.
cases.json holds every query funnelfix sends (examples/hogql_cases.rs).
`--only funnel` measures the funnel queries (lookback, baseline, watch and
the segment watch), `--only evidence` the five evidence queries.
`--compare OLD.json` also measures the same queries as an earlier commit
sent them (examples/hogql_cases.rs run there, same times) and stops if
their rows differ (in the columns the query returns: an earlier query may
also have counted the per-person sums).

The table: MergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (toDate(timestamp),
event, cityHash64(person_id)), as PostHog's sharded_events (which leads with
team_id, one value here), with a materialized column for each property the
queries read (`mat_$pathname`, as PostHog Cloud has). person_id is a UUID,
properties a JSON string of about 300 bytes as posthog-js sends. Events are
spread over the cases' whole time range (about 45 days), one person per 10
events. 15% are funnel steps: journeys that view / (and then, with falling
probability, /pricing, signup_started, signup_completed), 40% of journeys
on mobile. The other 85%: $autocapture 40% (clicks with an
`elements_chain`, `elements_chain_texts` materialized from it as PostHog
has it), $pageleave 15%, $pageview of other paths 15%, six custom events
15%; page leaves and views report on the page before (scroll depth,
duration), web vitals and survey answers carry their values.

Property access is run both ways PostHog prints `properties.x` for
ClickHouse: from its materialized column, `nullIf(nullIf(mat_x, ''), 'null')`,
and, for a property without one, from the JSON,
`replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(properties, 'x'), ''), 'null'), '^"|"$', '')`;
comparisons with a nullable side become `ifNull(equals(a, b), 0)`.

For each query it reports the best wall time of 7 runs (max_threads = 2,
warm page cache; the queries take turns, so a busy moment on the machine
does not fall on one of them) and ratios of wall times, with the ratio of
CPU times (all threads) in brackets, which a busy machine disturbs less;
against:
- floor: SELECT count(), uniq(person_id) over the rows the query must read
  (its innermost WHERE: the time range and its `event IN (...)`
  prefilter), reading the columns it reads (each property it reads, from
  its materialized column or the JSON, and `elements_chain_texts`). uniq is
  approximate: it keeps a sample of at most 65536 hashes, so it does no
  per-person work;
- per-person floor: the same rows grouped by person_id (exact), the least
  a count of people, or of their entries, must do;
- floor reading its properties: the floor that also extracts every
  property the query reads from every one of those rows (what reading the
  properties costs by itself; with a materialized column it is a read,
  from the JSON a parse per row).
"""

import json
import re
import resource
import sys
import time

from check import literal

import chdb.session

LAYOUT = 5  # bump when the generated data changes
RUNS = 7

NOISE_PATHS = ["/", "/pricing", "/blog/launch", "/docs", "/about", "/changelog", "/careers", "/pricing/enterprise"]
OTHER_PAGES = NOISE_PATHS[2:]
CUSTOM = ["$web_vitals", "$rageclick", "feature_used", "$identify", "survey sent", "$groupidentify"]
TEXTS = ["Start free trial", "Watch the demo", "Compare plans", "Choose monthly"]


def properties(path, extra="", device="'Desktop'", extra_sql="''"):
    """posthog-js's usual properties, as a ClickHouse string expression;
    `extra_sql` an expression of more `,"name":value` pairs."""
    return (
        "concat('{\"$os\":\"Mac OS X\",\"$browser\":\"Chrome\",\"$device_type\":\"', " + device + ", '\","
        "\"$current_url\":\"https://acme.example', " + path + ", '\",\"$host\":\"acme.example\","
        "\"$pathname\":\"', " + path + ", '\",\"$referrer\":\"$direct\",\"$lib\":\"web\","
        "\"$lib_version\":\"1.236.0\"" + extra + "', " + extra_sql + ", ',\"$session_id\":\"', toString(session), '\"}')"
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
        "CREATE TABLE events (event String, timestamp DateTime64(6, 'UTC'), person_id UUID, properties String, "
        "elements_chain String, elements_chain_texts Array(String) MATERIALIZED "
        "arrayDistinct(extractAll(elements_chain, '(?::|\")text=\"(.*?)\"'))"
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
            {properties(f"{paths}[k + 1]", device="if(mobile, 'Mobile', 'Desktop')")} AS properties,
            '' AS elements_chain
        FROM (
            SELECT number % {journeys} AS j, intDiv(number, {journeys}) AS k, cityHash64(j, 5) % 100 AS h,
                   cityHash64(j, 6) AS session, cityHash64(j, 12) % 100 < 40 AS mobile
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
    texts = "[" + ",".join(literal(e) for e in TEXTS) + "]"
    # What the evidence queries read: page leaves and views report on the
    # page before, web vitals and survey answers carry their values.
    evidence_sql = (
        "multiIf(event IN ('$pageleave', '$pageview'), concat(',\"$prev_pageview_pathname\":\"', path, "
        "'\",\"$prev_pageview_max_scroll_percentage\":', toString((cityHash64(n, 12) % 100) / 100), "
        "',\"$prev_pageview_duration\":', toString(cityHash64(n, 13) % 300)), "
        "event = '$web_vitals', concat(',\"$web_vitals_LCP_value\":', toString(500 + cityHash64(n, 14) % 4000)), "
        "event = 'survey sent', ',\"$survey_response\":\"Is there a monthly plan?\"', '')"
    )
    noise_properties = properties(
        "path", ',"$event_type":"click","$el_text":"Start free trial"', extra_sql=evidence_sql
    )
    session.query(
        f"""INSERT INTO events
        SELECT
            multiIf(b < 40, '$autocapture', b < 55, '$pageleave', b < 70, '$pageview',
                    {custom}[cityHash64(n, 4) % {len(CUSTOM)} + 1]) AS event,
            toDateTime64({start} + cityHash64(n, 2) % {span}, 6, 'UTC') AS timestamp,
            {uuid(f"cityHash64(n, 1) % {people}")} AS person_id,
            {noise_properties} AS properties,
            if(event = '$autocapture', concat('button.btn:text="', {texts}[cityHash64(n, 15) % {len(TEXTS)} + 1],
               '"nth-child="2"nth-of-type="1";div.pricing:nth-child="1"nth-of-type="1"'), '') AS elements_chain
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


def use_table(session, rows, start, end, props, data):
    """Switches to the table of `rows` events, generated if it is missing
    or was made for other cases."""
    session.query(f"CREATE DATABASE IF NOT EXISTS bench_{rows}")
    session.query(f"USE bench_{rows}")
    if not ready(session, rows, start, end, props):
        began = time.perf_counter()
        print(f"generating {rows:,} events in {data} ...", file=sys.stderr)
        generate(session, rows, start, end, props)
        print(f"generated in {time.perf_counter() - began:.0f} s", file=sys.stderr)


def property_sql(name, materialized):
    if materialized:
        return f"nullIf(nullIf({mat(name)}, ''), 'null')"
    return f"replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(properties, {literal(name)}), ''), 'null'), '^\"|\"$', '')"


def as_posthog(query, values, materialized):
    """What PostHog sends ClickHouse for the HogQL (the parts that cost)."""
    sql = re.sub(r"((?:properties\.\$?\w+)|\bf\d+) = (\{\w+\})", r"ifNull(equals(\1, \2), 0)", query)
    sql = re.sub(r"properties\.(\$?\w+)", lambda m: property_sql(m.group(1), materialized), sql)
    sql = sql.replace("toFloat(", "toFloat64OrNull(")
    return re.sub(r"\{(\w+)\}", lambda m: literal(values[m.group(1)]), sql)


def read_properties(query):
    """The properties a query reads."""
    return sorted(set(re.findall(r"properties\.(\$?\w+)", query)))


def scan_where(query):
    """A query's time range and event prefilter (its innermost WHERE, up to
    the step conditions): the rows it must read."""
    where = query[query.index("FROM events\n") + len("FROM events\n"):]
    lines = []
    for line in where.split("\n"):
        if line.strip().startswith("AND (s0 OR"):
            break
        lines.append(line.strip())
    return " ".join(lines)


def floor_of(case, materialized):
    """SELECT count(), uniq(person_id) over the rows the query must read,
    reading the columns it reads."""
    q = case["query"]
    columns = [mat(p) for p in read_properties(q)] if materialized else ["properties"]
    if "elements_chain_texts" in q:
        columns.append("elements_chain_texts")
    return as_posthog(
        f"SELECT count(), uniq(person_id) FROM events {scan_where(q)} AND NOT ignore({', '.join(columns)})",
        case["values"],
        materialized,
    )


def extraction_of(case, materialized):
    """The floor plus each property the query reads, extracted on every row
    the query must read: what reading the properties costs by itself."""
    q = case["query"]
    extracted = ", ".join(f"max(length(ifNull(properties.{p}, '')))" for p in read_properties(q)) or "0"
    columns = [mat(p) for p in read_properties(q)] if materialized else ["properties"]
    if "elements_chain_texts" in q:
        columns.append("elements_chain_texts")
    return as_posthog(
        f"SELECT count(), uniq(person_id), {extracted} FROM events {scan_where(q)} AND NOT ignore({', '.join(columns)})",
        case["values"],
        materialized,
    )


def person_floor_of(case, materialized):
    """The floor's rows grouped by person_id, exactly: the least a count of
    people (or of their entries) must do."""
    q = case["query"]
    columns = [mat(p) for p in read_properties(q)] if materialized else ["properties"]
    if "elements_chain_texts" in q:
        columns.append("elements_chain_texts")
    return as_posthog(
        "SELECT count(), sum(n) FROM (SELECT person_id, count() AS n FROM events "
        f"{scan_where(q)} AND NOT ignore({', '.join(columns)}) GROUP BY person_id)",
        case["values"],
        materialized,
    )


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


def ms(seconds):
    return f"{seconds * 1000:,.0f} ms"


def main(argv):
    data = "/var/tmp/funnelfix-bench"
    compare_path = None
    only = None
    for flag in ("--data", "--compare", "--only"):
        if flag in argv:
            i = argv.index(flag)
            if flag == "--data":
                data = argv[i + 1]
            elif flag == "--compare":
                compare_path = argv[i + 1]
            else:
                only = argv[i + 1]
            del argv[i:i + 2]
    path, sizes = argv[0], [int(x) for x in argv[1:]] or [10_000_000, 50_000_000]
    cases = json.load(open(path))
    compare = {c["name"]: c for c in json.load(open(compare_path))} if compare_path else {}
    start = min(c["values"]["date_from"] for c in cases) - 2 * 86400
    end = max(c["values"]["date_until"] for c in cases)
    props = sorted({p for c in cases for p in read_properties(c["query"])})
    if only is not None:
        assert only in ("funnel", "evidence"), "--only takes funnel or evidence"
        cases = [c for c in cases if c["name"].startswith("evidence") == (only == "evidence")]
    session = chdb.session.Session(data)
    print(
        "| events | property | query | rows it must read | query | floor | query ÷ floor "
        "| per-person floor | query ÷ it | floor reading its properties | query ÷ it"
        + (" | earlier query | earlier ÷ floor |" if compare else " |")
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if compare else ""))
    for rows in sizes:
        use_table(session, rows, start, end, props, data)
        for materialized in (True, False):
            for case in cases:
                v = case["values"]
                queries = {
                    "query": as_posthog(case["query"], v, materialized),
                    "floor": floor_of(case, materialized),
                    "person": person_floor_of(case, materialized),
                    "extract": extraction_of(case, materialized),
                }
                old = compare.get(case["name"])
                if old is not None:
                    assert old["values"] == v, f"{case['name']}: the earlier cases are for other times"
                    queries["earlier"] = as_posthog(old["query"], v, materialized)
                times, got = run(session, queries)
                assert got["query"], f"{case['name']}: no rows"
                if old is not None:
                    # The earlier query may also have counted the per-person
                    # sums, after the columns this one returns.
                    width = len(got["query"][0])
                    earlier = [row[:width] for row in got["earlier"]]
                    assert got["query"] == earlier, f"{case['name']}: the rows changed"
                wall = {k: w for k, (w, _) in times.items()}
                cpu = {k: c for k, (_, c) in times.items()}

                def ratio(a, b):
                    return f"{wall[a] / wall[b]:.1f}× ({cpu[a] / cpu[b]:.1f}×)"

                line = (
                    f"| {rows / 1e6:.0f}M | {'materialized' if materialized else 'JSON'} | {case['name']} "
                    f"| {int(got['floor'][0][0]):,} | {ms(wall['query'])} | {ms(wall['floor'])} "
                    f"| **{ratio('query', 'floor')}** | {ms(wall['person'])} | {ratio('query', 'person')} "
                    f"| {ms(wall['extract'])} | {ratio('query', 'extract')} |"
                )
                if old is not None:
                    line += f" {ms(wall['earlier'])} | {ratio('earlier', 'floor')} |"
                print(line)
                sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
