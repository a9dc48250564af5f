"""Checks funnelfix's HogQL for real.

Reads cases (query text, placeholder values, the funnel it should count) as
JSON from the file named on the command line. For each case it
1. parses the text with PostHog's own HogQL parser (PyPI hogql-parser),
2. runs it on ClickHouse (PyPI chdb) over a synthetic events table, after the
   rewrite PostHog itself does (placeholders become literals, properties.x
   becomes JSONExtractString(properties, 'x')),
3. compares the rows with an independent count in plain Python: ordered steps
   within the window, one row per person, entrants in [date_from, date_to),
   grouped by the UTC date of the first entry.
The events include other events of the same people and of others
($autocapture, $pageleave, other pages), which the query's `event IN (...)`
prefilter skips and the reference simply never matches.
Exits 1 with the differences when anything disagrees.
"""

import json
import os
import random
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "stub"))

import chdb.session  # noqa: E402
import hogql_parser  # noqa: E402


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


def synthetic_events(case, seed):
    """People walking the funnel with every awkward case we know of."""
    rng = random.Random(seed)
    steps = case["steps"]
    frm, until = case["values"]["date_from"], case["values"]["date_until"]
    window = case["window_secs"]
    events = []
    for p in range(case.get("people", 1500)):
        person = f"person-{p}"
        t = rng.randint(frm - 3 * 86400, until + 86400)
        used = set()

        def emit(step, when, wrong=False):
            while when in used:  # whole, distinct seconds per person: no ties
                when += 1
            used.add(when)
            s = steps[step]
            props = dict(s["filters"])
            if wrong and props:
                key = next(iter(props))
                props[key] = props[key] + "/other"
            events.append((person, s["event"], when, json.dumps(props)))

        for _visit in range(rng.choice([1, 1, 1, 2, 3])):
            reached = 0
            emit(0, t)
            at = t
            for k in range(1, len(steps)):
                r = rng.random()
                if r < 0.35:
                    break
                gap = rng.randint(1, int(window * (1.6 if r > 0.9 else 0.9)))
                at += gap
                emit(k, at, wrong=r < 0.4 and bool(steps[k]["filters"]))
                reached = k
            if rng.random() < 0.2:
                # A later step seen before the first: must not count.
                emit(rng.randrange(1, len(steps)), t - rng.randint(1, 600))
            t = at + rng.randint(60, 3 * 86400)
            del reached
        # What else people do: events no step matches.
        for _ in range(rng.randint(0, 6)):
            when = rng.randint(frm - 86400, until + 86400)
            while when in used:
                when += 1
            used.add(when)
            name, props = rng.choice(NOISE)
            events.append((person, name, when, json.dumps(props)))
    # People who never touch the funnel.
    for p in range(case.get("people", 1500) // 5):
        for _ in range(rng.randint(1, 4)):
            name, props = rng.choice(NOISE)
            events.append((f"other-{p}", name, rng.randint(frm, until), json.dumps(props)))
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
    """Independent count: rows[day] = [entrants, reached_2, ...]."""
    steps = case["steps"]
    v = case["values"]
    frm, to, until, window = v["date_from"], v["date_to"], v["date_until"], case["window_secs"]

    def matches(e, k):
        props = json.loads(e[3])
        return e[1] == steps[k]["event"] and all(props.get(a) == b for a, b in steps[k]["filters"].items())

    people = {}
    for e in events:
        if frm <= e[2] <= until:
            people.setdefault(e[0], []).append(e)
    rows = {}
    for evs in people.values():
        evs.sort(key=lambda e: e[2])
        starts = [i for i, e in enumerate(evs) if matches(e, 0) and e[2] < to]
        if not starts:
            continue
        best = 0
        for s in starts:
            level, t0 = 1, evs[s][2]
            for e in evs[s + 1:]:
                if level == len(steps) or e[2] > t0 + window:
                    break
                if matches(e, level):
                    level += 1
            best = max(best, level)
        day = evs[starts[0]][2] // 86400  # the UTC date, as days since 1970-01-01
        row = rows.setdefault(day, [0] * len(steps))
        for k in range(best):
            row[k] += 1
    return [[d] + rows[d] for d in sorted(rows)]


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
        events = synthetic_events(case, seed=n + 1)
        session.query("DROP TABLE IF EXISTS events")
        session.query(
            "CREATE TABLE events (person_id String, event String, timestamp DateTime64(3, 'UTC'), "
            "properties String) ENGINE = Memory"
        )
        for i in range(0, len(events), 5000):
            chunk = ",".join(
                f"({literal(p)}, {literal(e)}, toDateTime64({t}, 3, 'UTC'), {literal(props)})"
                for p, e, t, props in events[i:i + 5000]
            )
            session.query(f"INSERT INTO events VALUES {chunk}")
        got = json.loads(str(session.query(to_clickhouse(case["query"], case["values"]), "JSONCompact")))["data"]
        got = [[int(x) for x in row] for row in got]
        want = reference(case, events)
        entrants = sum(r[1] for r in want)
        if got != want:
            print(f"{case['name']}: ClickHouse {got}\n{' ' * len(case['name'])}  expected   {want}")
            failures += 1
        else:
            print(f"{case['name']}: ok ({len(events)} events, {entrants} entrants, {len(want)} days)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(sys.argv[1])
