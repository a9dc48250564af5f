"""Checks funnelfix's HogQL for real.

Reads cases (query text, placeholder values, the funnel it should count) as
JSON from the file named on the command line. For each case it
1. parses the text with PostHog's own HogQL parser (PyPI hogql-parser),
2. runs it on ClickHouse (PyPI chdb) over a synthetic events table, after the
   rewrite PostHog itself does (placeholders become literals, properties.x
   becomes JSONExtractString(properties, 'x')),
3. compares the rows with an independent computation of the estimand in
   plain Python (see `reference`) over simulated people who come back on
   several days, convert late, and send other events around the funnel's
   ($autocapture, $pageleave, other pages), which the query's `event IN
   (...)` prefilter skips and the reference simply never matches,
4. and, when the case holds the PostHog twin's answer to the same query over
   the same events (`"twin"`; `check.py --events OUT cases.json` writes the
   events), compares the rows with it too.
Exits 1 with the differences when anything disagrees.
"""

import datetime as dt
import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "stub"))
sys.path.insert(0, os.path.dirname(__file__))

import chdb.session  # noqa: E402
import hogql_parser  # noqa: E402

import evidence  # noqa: E402


def literal(value):
    if isinstance(value, bool):
        raise ValueError("booleans are not used")
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_clickhouse(query, values):
    """What PostHog does before ClickHouse sees the query (the parts we use)."""
    sql = re.sub(r"\{(\w+)\}", lambda m: literal(values[m.group(1)]), query)
    sql = re.sub(r"properties\.(\$?\w+)", lambda m: f"JSONExtractString(properties, '{m.group(1)}')", sql)
    return sql


def as_posthog(query, values):
    """PostHog's own rewrite (as in bench.py): properties read from the JSON
    as nullable strings, comparisons with a nullable side wrapped in
    ifNull, toFloat that gives NULL for what is not a number."""
    sql = re.sub(r"((?:properties\.\$?\w+)|\bf\d+) = (\{\w+\})", r"ifNull(equals(\1, \2), 0)", query)
    sql = re.sub(
        r"properties\.(\$?\w+)",
        lambda m: f"replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(properties, '{m.group(1)}'), ''), 'null'), '^\"|\"$', '')",
        sql,
    )
    sql = sql.replace("toFloat(", "toFloat64OrNull(")
    return re.sub(r"\{(\w+)\}", lambda m: literal(values[m.group(1)]), sql)


def synthetic_events(case, seed):
    """People visiting over weeks, with every awkward case we know of:
    returning visitors (several visits a day, visits days and weeks apart),
    next steps seconds to 1.6 windows later (some after the window), step
    events out of order, wrong filter values, visits on the entry range's
    first day before it starts, and other events around the funnel's."""
    rng = random.Random(seed)
    steps = case["steps"]
    v = case["values"]
    frm, until = v["date_from"], v["date_until"]
    window = case["window_secs"]
    segment = case.get("segment")
    events = []
    for p in range(case.get("people", 1200)):
        person = f"person-{p}"
        used = set()

        def emit(event, props, when):
            while when in used:  # whole, distinct seconds per person: no ties
                when += 1
            used.add(when)
            events.append((person, event, when, json.dumps(props), ""))

        device = None

        def step(k, when, wrong=False):
            props = dict(steps[k]["filters"])
            if wrong and props:
                key = next(iter(props))
                props[key] = props[key] + "/other"
            if device is not None:
                props[segment["property"]] = device
            emit(steps[k]["event"], props, when)
            # Noise on the same page: a page leave and a click.
            page = {"$pathname": props.get("$pathname", "/x")}
            emit("$pageleave", page, when + rng.randint(1, 90))
            if rng.random() < 0.5:
                emit("$autocapture", dict(page, **{"$event_type": "click"}), when + rng.randint(1, 60))

        t = rng.randint(frm - 3 * 86400, until + 86400)
        visits = rng.choice([1, 1, 2, 3, 5, 8])
        for _visit in range(visits):
            if segment:
                # The segment's property per visit, sometimes absent: a
                # person's visits of one day may differ.
                device = rng.choice([segment["value"], segment["value"], "Desktop", "Tablet", ""])
                device = None if device == "" else device
            if rng.random() < 0.3:
                emit("$pageview", {"$pathname": "/blog"}, t - rng.randint(1, 300))
            first = rng.choice([0, 0, 0, 1]) if len(steps) > 2 else 0
            step(first, t)
            at = t
            for k in range(first + 1, len(steps)):
                r = rng.random()
                if r < 0.35:
                    break
                if r > 0.8:
                    gap = rng.randint(600, int(window * 1.6) + 600)  # a later session
                else:
                    gap = rng.randint(1, max(2, min(window, 900)))
                at += gap
                step(k, at, wrong=r < 0.4 and bool(steps[k]["filters"]))
            if rng.random() < 0.2:
                # A later step seen before the first: never a conversion.
                step(rng.randrange(1, len(steps)), t - rng.randint(1, 600))
            # The next visit: the same day, or days to weeks later.
            t = at + (rng.randint(60, 6 * 3600) if rng.random() < 0.3 else rng.randint(86400, 21 * 86400))
        # What else people do: events no step matches.
        for _ in range(rng.randint(0, 6)):
            name, props = rng.choice(NOISE)
            emit(name, props, rng.randint(frm - 86400, until + 86400))
    # People who never touch the funnel.
    for p in range(case.get("people", 1200) // 5):
        for _ in range(rng.randint(1, 4)):
            name, props = rng.choice(NOISE)
            events.append((f"other-{p}", name, rng.randint(frm, until), json.dumps(props), ""))
    return events


# Events that are not a funnel step, as PostHog records them.
NOISE = [
    ("$autocapture", {"$event_type": "click", "$pathname": "/"}),
    ("$pageleave", {"$pathname": "/pricing"}),
    ("$pageview", {"$pathname": "/blog/launch"}),
    ("$rageclick", {"$pathname": "/cart"}),
    ("feature_used", {"plan": "free"}),
]


def reference(case, events):
    """The estimand, from its definition over every event of every person:
    an entry at step i is a person's first step-i event of a UTC day,
    counted when it falls in [date_from, date_to) (and, with a segment, when
    that event has the segment's property value); it converted when the
    person has a step-(i+1) event at or after it, at most the window later.
    Rows: [day, entries_0, converted_0, ..., entries_(n-1)] per day, then,
    when the query counts them, per transition i the per-person sums over
    the range, each entry adding its
    person's N (entries at step i) and, if converted, N and X (conversions):
    [sum N, sum over converted of N, sum over converted of X]."""
    steps = case["steps"]
    v = case["values"]
    frm, to, window = v["date_from"], v["date_to"], case["window_secs"]
    n = len(steps)

    def matches(e, k):
        props = json.loads(e[3])
        return e[1] == steps[k]["event"] and all(props.get(a) == b for a, b in steps[k]["filters"].items())

    segment = case.get("segment")
    times = {}  # (person, step) -> sorted times
    in_segment = set()  # (person, step, time) of step events in the segment
    for e in events:
        for k in range(n):
            if matches(e, k):
                times.setdefault((e[0], k), []).append(e[2])
                if not segment or json.loads(e[3]).get(segment["property"], "") == segment["value"]:
                    in_segment.add((e[0], k, e[2]))
    width = 2 * n - 1 + 3 * (n - 1)
    rows = {}
    for (person, k), ts in times.items():
        first_of_day = {}
        for x in sorted(ts):
            first_of_day.setdefault(x // 86400, x)
        entries = []
        for day, x in first_of_day.items():
            if frm <= x < to and (person, k, x) in in_segment:
                converted = k + 1 < n and any(x <= y <= x + window for y in times.get((person, k + 1), []))
                entries.append((day, converted))
        total = len(entries)
        total_converted = sum(1 for _, c in entries if c)
        for day, converted in entries:
            row = rows.setdefault(day, [0] * width)
            row[2 * k] += 1
            if k + 1 < n:
                sums = 2 * n - 1 + 3 * k
                row[sums] += total
                if converted:
                    row[2 * k + 1] += 1
                    row[sums + 1] += total
                    row[sums + 2] += total_converted
    # The per-person sums only when the query counts them.
    if "AS entries_sq_0" not in case["query"]:
        width = 2 * n - 1
    return [[d] + rows[d][:width] for d in sorted(rows)]


def case_events(n, case):
    kind = case.get("kind")
    return (evidence.synthetic_events if kind else synthetic_events)(case, seed=n + 1)


def write_events(path, out):
    """`--events OUT`: each case's synthetic events, for the PostHog twin to
    answer the same query from (tests/hogql.rs)."""
    cases = json.load(open(path))
    json.dump([case_events(n, case) for n, case in enumerate(cases)], open(out, "w"))


def twin_differs(case, got):
    """What the PostHog twin answered, when it differs from ClickHouse."""
    if "twin" not in case:
        return None
    twin = evidence.normal(case["twin"])
    return None if twin == evidence.normal(got) else twin


def main(path):
    cases = json.load(open(path))
    session = chdb.session.Session()
    session.query("CREATE DATABASE IF NOT EXISTS check_db")
    session.query("USE check_db")
    failures = 0
    for n, case in enumerate(cases):
        ast = json.loads(hogql_parser.parse_select_json(case["query"]))
        if ast.get("error"):
            print(f"{case['name']}: HogQL parser: {ast['message']}")
            failures += 1
            continue
        placeholders = set(re.findall(r"\{(\w+)\}", case["query"]))
        if placeholders != set(case["values"]):
            print(f"{case['name']}: placeholders {sorted(placeholders)} != values {sorted(case['values'])}")
            failures += 1
        kind = case.get("kind")
        events = case_events(n, case)
        session.query("DROP TABLE IF EXISTS events")
        session.query(
            "CREATE TABLE events (person_id String, event String, timestamp DateTime64(3, 'UTC'), "
            "properties String, elements_chain String, elements_chain_texts Array(String) MATERIALIZED "
            "arrayDistinct(extractAll(elements_chain, '(?::|\")text=\"(.*?)\"'))) ENGINE = Memory"
        )
        for i in range(0, len(events), 5000):
            chunk = ",".join(
                f"({literal(p)}, {literal(e)}, toDateTime64({t}, 3, 'UTC'), {literal(props)}, {literal(el)})"
                for p, e, t, props, el in events[i:i + 5000]
            )
            session.query(f"INSERT INTO events (person_id, event, timestamp, properties, elements_chain) VALUES {chunk}")
        if kind:
            sql = as_posthog(case["query"], case["values"])
            try:
                got = evidence.normal(json.loads(str(session.query(sql, "JSONCompact")))["data"])
            except Exception as e:  # noqa: BLE001 - every case is reported
                print(f"{case['name']}: ClickHouse: {str(e)[:600]}")
                failures += 1
                continue
            want = evidence.normal(evidence.reference(case, events))
            twin = twin_differs(case, got)
            if got != want:
                print(f"{case['name']}: ClickHouse {got}\n{' ' * len(case['name'])}  expected   {want}")
                failures += 1
            elif twin is not None:
                print(f"{case['name']}: ClickHouse {got}\n{' ' * len(case['name'])}  PostHog twin {twin}")
                failures += 1
            elif want in ([], [[0, 0, 0, 0, 0, 0, 0, 0]], [[0, 0, []]]) or len(evidence.entries(case, events)) == 0:
                print(f"{case['name']}: the simulated events gave nothing to count")
                failures += 1
            else:
                agrees = ", the twin agrees" if "twin" in case else ""
                print(f"{case['name']}: ok ({len(events)} events, {len(evidence.entries(case, events))} entries, {len(want)} rows{agrees})")
            continue
        got = json.loads(str(session.query(to_clickhouse(case["query"], case["values"]), "JSONCompact")))["data"]
        got = [[int(x) for x in row] for row in got]
        want = reference(case, events)
        counted = 2 * len(case["steps"])
        entries = sum(sum(r[1:counted:2]) for r in want)
        converted = sum(sum(r[2:counted:2]) for r in want)
        twin = twin_differs(case, got)
        if got != want:
            print(f"{case['name']}: ClickHouse {got}\n{' ' * len(case['name'])}  expected   {want}")
            failures += 1
        elif twin is not None:
            print(f"{case['name']}: ClickHouse {got}\n{' ' * len(case['name'])}  PostHog twin {twin}")
            failures += 1
        elif entries == 0 or converted == 0:
            print(f"{case['name']}: the simulated events gave no entries or no conversions")
            failures += 1
        else:
            agrees = ", the twin agrees" if "twin" in case else ""
            print(f"{case['name']}: ok ({len(events)} events, {entries} entries, {converted} conversions, {len(want)} days{agrees})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    if sys.argv[1] == "--events":
        write_events(sys.argv[3], sys.argv[2])
    else:
        main(sys.argv[1])
