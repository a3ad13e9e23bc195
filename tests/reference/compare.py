#!/usr/bin/env python3
"""Compare two `attrib replay` outputs.

Usage: python3 compare.py [--ignore-device-ids] A.jsonl B.jsonl

Ignores `processed_at` (actions), `detail` (invalid actions) and the text of the DLQ
header `attrib.error`.  Everything else is compared, including the `device_id` of each
credit and of each `journey.touchpoints` entry (docs/design.md §2, §6): a missing, extra,
differing or misplaced `device_id` is a difference.  `--ignore-device-ids` (off by
default) drops those two nested `device_id` fields from both sides before comparing, for
an implementation that does not write them yet; the action's own `device_id` is still
compared.  Action ids are mapped, per file, to a canonical form
"<program_id>|<event_type>|<order_id>#n", where n counts the distinct ids that file
used for that order (0 for the first), so "ID:..." and UUIDs compare equal when each
file uses one id per order consistently.  An id used for two different orders is
reported.  Field order of action and invalid-action values is compared too; DLQ
values are compared as JSON values (numbers by value, object keys unordered).
Exit status 1 on any difference.
"""

import json
import sys
from decimal import Decimal


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [l.decode("utf-8", errors="replace") for l in lines]


class Canon:
    def __init__(self):
        self.by_order = {}   # order triple -> list of ids seen
        self.by_id = {}      # id -> order triple
        self.problems = []

    def map(self, lineno, aid, triple):
        ids = self.by_order.setdefault(triple, [])
        if aid not in ids:
            ids.append(aid)
        prev = self.by_id.setdefault(aid, triple)
        if prev != triple:
            self.problems.append("line %d: action id %r used for %s and %s" % (lineno, aid, prev, triple))
        return "%s|%s|%s#%d" % (triple + (ids.index(aid),))


def ordered(v):
    """A comparable form that keeps object key order."""
    if isinstance(v, dict):
        return ("{", tuple((k, ordered(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("[", tuple(ordered(x) for x in v))
    if isinstance(v, bool) or v is None:
        return ("c", v)
    if isinstance(v, Decimal):
        return ("n", v)
    return ("s", v)


def unordered(v):
    if isinstance(v, dict):
        return ("{", tuple(sorted((k, unordered(x)) for k, x in v.items())))
    if isinstance(v, list):
        return ("[", tuple(unordered(x) for x in v))
    if isinstance(v, bool) or v is None:
        return ("c", v)
    if isinstance(v, Decimal):
        return ("n", v.normalize() if v.is_finite() else v)
    return ("s", v)


IGNORE_DEVICE_IDS = False


def drop_nested_device_ids(v):
    for c in v.get("credits") or []:
        if isinstance(c, dict):
            c.pop("device_id", None)
    j = v.get("journey")
    if isinstance(j, dict):
        for t in j.get("touchpoints") or []:
            if isinstance(t, dict):
                t.pop("device_id", None)


def normalize(lineno, text, canon, stats):
    try:
        o = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except ValueError:
        stats["unparsable"] = stats.get("unparsable", 0) + 1
        return ("unparsable", text)
    if not isinstance(o, dict):
        return ("not an object", text)
    topic = o.get("topic")
    stats[topic] = stats.get(topic, 0) + 1
    v = o.get("value")
    if topic == "actions" and isinstance(v, dict):
        v = dict(v)
        v.pop("processed_at", None)
        if IGNORE_DEVICE_IDS:
            drop_nested_device_ids(v)
        triple = (v.get("program_id"), v.get("event_type"), v.get("order_id"))
        aid = v.get("action_id")
        if aid != o.get("key"):
            canon.problems.append("line %d: key %r differs from action_id %r" % (lineno, o.get("key"), aid))
        v["action_id"] = canon.map(lineno, aid, triple)
        rest = {k: x for k, x in o.items() if k not in ("topic", "key", "value")}
        return ("actions", v["action_id"], ordered(v), unordered(rest))
    if topic == "invalid_actions" and isinstance(v, dict):
        v = dict(v)
        v.pop("detail", None)
        rest = {k: x for k, x in o.items() if k not in ("topic", "key", "value")}
        return ("invalid_actions", o.get("key"), ordered(v), unordered(rest))
    if topic == "dlq":
        h = o.get("headers")
        if isinstance(h, dict):
            h = dict(h)
            h.pop("attrib.error", None)
        rest = {k: x for k, x in o.items() if k not in ("topic", "key", "value", "headers")}
        return ("dlq", o.get("key"), unordered(v), unordered(h), unordered(rest))
    return ("other", unordered(o))


MISSING = object()


def diff_paths(a, b, path, out, limit=6):
    """Appends to out the paths (e.g. credits[1].device_id) where a and b differ."""
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(a) + [k for k in b if k not in a]
        before = len(out)
        for k in keys:
            sub = "%s.%s" % (path, k) if path else k
            x, y = a.get(k, MISSING), b.get(k, MISSING)
            if x is MISSING or y is MISSING:
                out.append(sub + (" (only in B)" if x is MISSING else " (only in A)"))
            elif ordered(x) != ordered(y):
                diff_paths(x, y, sub, out, limit)
            if len(out) >= limit:
                return
        if len(out) == before and list(a) != list(b):
            out.append((path or "value") + " <field order>")
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if ordered(x) != ordered(y):
                diff_paths(x, y, "%s[%d]" % (path, i), out, limit)
        return
    if isinstance(a, list) and isinstance(b, list):
        out.append("%s (lengths %d, %d)" % (path, len(a), len(b)))
        return
    out.append(path)


def field_hint(la, lb):
    """Names the differing fields of two same-topic lines, nested ones by path
    (credits[0].device_id, journey.touchpoints[3].device_id), if it can."""
    try:
        a = json.loads(la, parse_float=Decimal, parse_int=Decimal)
        b = json.loads(lb, parse_float=Decimal, parse_int=Decimal)
        va, vb = a.get("value"), b.get("value")
        if a.get("topic") != b.get("topic") or not isinstance(va, dict) or not isinstance(vb, dict):
            return ""
        if IGNORE_DEVICE_IDS and a.get("topic") == "actions":
            drop_nested_device_ids(va)
            drop_nested_device_ids(vb)
        ignore = ("processed_at", "detail", "action_id")
        va = {k: x for k, x in va.items() if k not in ignore}
        vb = {k: x for k, x in vb.items() if k not in ignore}
        names = []
        diff_paths(va, vb, "", names)
        return " (fields: %s)" % ", ".join(names) if names else ""
    except Exception:
        return ""


def main():
    global IGNORE_DEVICE_IDS
    args = sys.argv[1:]
    if "--ignore-device-ids" in args:
        IGNORE_DEVICE_IDS = True
        args = [a for a in args if a != "--ignore-device-ids"]
    if len(args) != 2 or any(a.startswith("--") for a in args):
        sys.stderr.write("usage: compare.py [--ignore-device-ids] A.jsonl B.jsonl\n")
        sys.exit(2)
    a_path, b_path = args
    A, B = load(a_path), load(b_path)
    ca, cb = Canon(), Canon()
    sa, sb = {}, {}
    diffs = []
    n = max(len(A), len(B))
    for i in range(n):
        la = A[i] if i < len(A) else None
        lb = B[i] if i < len(B) else None
        na = normalize(i + 1, la, ca, sa) if la is not None else None
        nb = normalize(i + 1, lb, cb, sb) if lb is not None else None
        if na != nb:
            diffs.append((i + 1, la, lb))
    problems = ["A " + p for p in ca.problems] + ["B " + p for p in cb.problems]

    for lineno, la, lb in diffs[:10]:
        print("--- line %d%s" % (lineno, field_hint(la, lb)))
        print("A: %s" % (la if la is not None else "<missing>"))
        print("B: %s" % (lb if lb is not None else "<missing>"))
    for p in problems[:10]:
        print("id problem: " + p)

    def summary(name, path, lines, s):
        print("%s %s: %d lines, %d actions, %d invalid actions, %d dlq%s" % (
            name, path, len(lines), s.get("actions", 0), s.get("invalid_actions", 0), s.get("dlq", 0),
            (", %d unparsable" % s["unparsable"]) if s.get("unparsable") else ""))

    summary("A", a_path, A, sa)
    summary("B", b_path, B, sb)
    if diffs or problems:
        print("DIFFERENT: %d differing lines (first at line %d), %d id problems" % (
            len(diffs), diffs[0][0] if diffs else 0, len(problems)))
        sys.exit(1)
    print("SAME")


if __name__ == "__main__":
    main()
