"""The evidence queries' half of the HogQL check (see check.py).

Synthetic people visit a step's page over weeks and do there what PostHog
records: autocaptured clicks (element texts in `elements_chain`), custom
events, rage and dead clicks, page leaves and page views reporting scroll
depth and time on the page just left (some without a duration), web vitals
(some metrics missing), survey answers (and surveys shown but not
answered); they do the same on other pages, after going on, on the next
day, and on days before the entry range. `reference` computes each part
from its definition in plain Python; `run` prints PostHog's rewrite of the
query for ClickHouse.
"""

import json
import random
import re

DAY = 86400
TEXTS = ["Watch the demo", "Choose monthly", "Compare plans", "Continue", ""]
CUSTOM = ["demo video played", "faq opened", "survey shown"]
ANSWERS = ["Is there no monthly plan?", "Too expensive", "Just looking", "I need a monthly option"]


def chain(text):
    tag = 'button.btn:nth-child="2"nth-of-type="1"'
    if text:
        tag = f'button.btn:text="{text}"nth-child="2"nth-of-type="1"'
    return tag + ';div.pricing:nth-child="1"nth-of-type="1";body:nth-child="1"nth-of-type="1"'


def synthetic_events(case, seed):
    rng = random.Random(seed)
    steps = case["steps"]
    v = case["values"]
    frm, until = v["date_from"], v["date_until"]
    window = case["window_secs"]
    pages = [s.get("page", "/x") for s in steps]
    events = []
    for p in range(case.get("people", 900)):
        person = f"person-{p}"
        used = set()
        device = rng.choice(["Desktop", "Mobile", "Tablet", None])
        browser = rng.choice(["Chrome", "Safari", "Firefox"])

        def emit(event, props, when, elements=""):
            while when in used:
                when += 1
            used.add(when)
            events.append((person, event, when, json.dumps(props), elements))
            return when

        def on_page(page, when):
            """What a visitor does on a page, in the minutes after `when`."""
            for _ in range(rng.randint(0, 4)):
                r = rng.random()
                at = when + rng.randint(0, 600)
                if r < 0.35:
                    emit("$autocapture", {"$pathname": page, "$event_type": rng.choice(["click", "click", "submit", "change"])},
                         at, chain(rng.choice(TEXTS)))
                elif r < 0.5:
                    emit(rng.choice(CUSTOM), {"$pathname": page}, at)
                elif r < 0.6:
                    emit(rng.choice(["$rageclick", "$dead_click"]), {"$pathname": page}, at, chain(rng.choice(TEXTS)))
                elif r < 0.75:
                    vitals = {"$pathname": page}
                    for metric, lo, hi in [("LCP", 800, 6000), ("INP", 40, 600), ("CLS", 0, 1)]:
                        if rng.random() < 0.8:
                            value = rng.uniform(lo, hi)
                            vitals[f"$web_vitals_{metric}_value"] = round(value, 3) if metric == "CLS" else round(value)
                    emit("$web_vitals", vitals, at)
                elif r < 0.85:
                    emit("survey sent", {"$pathname": page, "$survey_response": rng.choice(ANSWERS + [""])}, at)
                else:
                    leave = {"$pathname": page, "$prev_pageview_pathname": page,
                             "$prev_pageview_max_scroll_percentage": round(rng.random(), 2)}
                    if rng.random() < 0.8:
                        leave["$prev_pageview_duration"] = rng.randint(1, 400)
                    emit(rng.choice(["$pageleave", "$pageview"]), leave, at)

        def step(k, when):
            props = dict(steps[k]["filters"])
            props["$pathname"] = pages[k]
            if device:
                props["$device_type"] = device
            props["$browser"] = browser
            props["$referring_domain"] = rng.choice(["google.com", "$direct", "news.ycombinator.com"])
            if rng.random() < 0.2:
                props["utm_source"] = "newsletter"
            at = emit(steps[k]["event"], props, when)
            on_page(pages[k], at)
            return at

        t = rng.randint(frm - 3 * DAY, until + DAY)
        for _visit in range(rng.choice([1, 1, 2, 3, 5])):
            at = step(0, t)
            if rng.random() < 0.4:
                gap = rng.randint(1, 900) if rng.random() < 0.8 else rng.randint(600, int(window * 1.5) + 600)
                step(1, at + gap)
            if rng.random() < 0.3:
                on_page("/blog", t + rng.randint(1, 3000))
            t = at + (rng.randint(60, 6 * 3600) if rng.random() < 0.3 else rng.randint(DAY, 14 * DAY))
    return events


def matches(step, event, props):
    return event == step["event"] and all(props.get(a) == b for a, b in step["filters"].items())


def texts(elements):
    seen = []
    for t in re.findall(r'(?::|")text="(.*?)"', elements):
        if t not in seen:
            seen.append(t)
    return seen


def number(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def part_row(kind, event, p, s0, s1, elements, t):
    """The part's tuple for a row, or None when the part does not read it."""
    page = str(p.get("$pathname", ""))
    if kind == "actions":
        frustration = event in ("$rageclick", "$dead_click")
        click = event == "$autocapture" and p.get("$event_type") in ("click", "submit")
        custom = not event.startswith("$") and not event.startswith("survey ")
        if (click or frustration or custom) and not s0 and not s1:
            kind_name = {"$autocapture": "click", "$rageclick": "rageclick", "$dead_click": "deadclick"}.get(event, "event")
            label = (texts(elements) or [""])[0] if event.startswith("$") else event
            return (t, page, kind_name, label)
    elif kind == "attention":
        if event in ("$pageleave", "$pageview") and p.get("$prev_pageview_max_scroll_percentage") is not None:
            return (t, str(p.get("$prev_pageview_pathname", "")),
                    number(p.get("$prev_pageview_max_scroll_percentage")), number(p.get("$prev_pageview_duration")))
    elif kind == "speed":
        if event == "$web_vitals":
            def m(name):
                x = number(p.get(f"$web_vitals_{name}_value"))
                return -1 if x is None else x
            return (t, page, m("LCP"), m("INP"), m("CLS"))
    elif kind == "said":
        if event == "survey sent" and p.get("$survey_response", "") != "":
            return (t, page, p["$survey_response"])
    return None


def entries(case, events):
    """Every entry: (tuple of the step event, went-on time or 0, returning, seen part rows)."""
    kind, steps, v = case["kind"], case["steps"], case["values"]
    frm, to, window = v["date_from"], v["date_to"], case["window_secs"]
    people = {}
    for person, event, t, props, elements in events:
        if not v["date_read"] <= t <= v["date_until"]:
            continue
        p = json.loads(props)
        s0, s1 = matches(steps[0], event, p), matches(steps[1], event, p)
        mine = people.setdefault(person, ([], [], []))
        if s0:
            mine[0].append((t, str(p.get("$pathname", "")), p.get("$device_type", ""), p.get("$browser", ""),
                            p.get("$referring_domain", ""), p.get("utm_source", "")))
        if s1:
            mine[1].append(t)
        row = part_row(kind, event, p, s0, s1, elements, t)
        if row is not None:
            mine[2].append(row)
    out = []
    for ts, tn, acts in people.values():
        ts.sort()
        tn.sort()
        acts.sort(key=lambda a: a[0])
        days = set()
        for x in ts:
            day = x[0] // DAY
            if day in days:
                continue
            days.add(day)
            if not frm <= x[0] < to:
                continue
            went = next((y for y in tn if x[0] <= y <= x[0] + window), 0)
            end = (day + 1) * DAY
            until = went if 0 < went < end else end - 1
            seen = [a for a in acts if x[0] <= a[0] <= until and a[1] == x[1]]
            out.append((x, went, ts[0][0] // DAY < day, seen))
    return out


def reference(case, events):
    kind = case["kind"]
    es = entries(case, events)
    if kind == "actions":
        groups = {}
        for _, went, _, seen in es:
            for key in {("", "")} | {(a[2], a[3]) for a in seen}:
                g = groups.setdefault(key, [0, 0])
                g[0] += 1
                g[1] += went > 0
        rows = sorted(([k[0], k[1], n, x] for k, (n, x) in groups.items()), key=lambda r: (-r[2], r[0], r[1]))
        return rows[:200]
    if kind == "segments":
        groups = {}
        for x, went, returning, _ in es:
            for key in [("$device_type", x[2]), ("$browser", x[3]), ("$referring_domain", x[4]),
                        ("utm_source", x[5]), ("visitor", "returning" if returning else "new")]:
                g = groups.setdefault(key, [0, 0])
                g[0] += 1
                g[1] += went > 0
        rows = sorted(([k[0], k[1], n, x] for k, (n, x) in groups.items()), key=lambda r: (r[0], -r[2], r[1]))
        out, per = [], {}
        for r in rows:
            per[r[0]] = per.get(r[0], 0) + 1
            if per[r[0]] <= 20:
                out.append(r)
        return out
    if kind == "attention":
        rows = []
        for flag in (0, 1):
            group = [e for e in es if (e[1] > 0) == bool(flag)]
            if not group:
                continue
            firsts = [e[3][0] for e in group if e[3]]
            scroll = [f[2] for f in firsts]
            secs = [f[3] for f in firsts if f[3] is not None]
            rows.append([flag, len(group), len(firsts), sum(s < 0.25 for s in scroll), sum(s < 0.5 for s in scroll),
                         sum(s < 0.75 for s in scroll), sum(secs) / len(secs) if secs else None])
        return rows
    if kind == "speed":
        def worst(seen, i):
            values = [a[i] for a in seen if a[i] >= 0]
            return max(values) if values else -1
        metrics = [sorted(v for v in (worst(e[3], i) for e in es) if v >= 0) for i in (2, 3, 4)]
        row = [len(es), sum(1 for e in es if e[3])]
        for values in metrics:
            row += [len(values), values[len(values) * 3 // 4] if values else 0]
        return [row]
    if kind == "said":
        answers = [(a[0], a[2], int(e[1] > 0)) for e in es for a in e[3]]
        recent = sorted(answers, reverse=True)[:5]
        return [[len(answers), sum(a[2] for a in answers), [list(a) for a in recent]]]
    raise ValueError(kind)


def normal(x):
    """Numbers as numbers (ClickHouse quotes 64-bit integers in JSON), floats rounded."""
    if isinstance(x, list):
        return [normal(y) for y in x]
    if isinstance(x, str):
        try:
            return normal(float(x)) if re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", x) else x
        except ValueError:
            return x
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, float):
        if x != x:
            return None
        return round(x, 6) if x != int(x) else int(x)
    return x
