#!/usr/bin/env python3
"""Independent reference implementation of `attrib replay` (docs/design.md §1-§3, §5, §6).

Usage: python3 attrib_ref.py [--stitching] [--config FILE] IN.jsonl > OUT.jsonl

Cross-device identity stitching (§6) is on with `--stitching`, with the environment
variable ATTRIB_IDENTITY_STITCHING=true (or 1), or with `identity.stitching = true` in
the TOML file given by `--config`; it is off by default.

Standard library only.  Input money is parsed with `decimal` from the JSON text
(never through float); all attribution arithmetic is done with exact rationals
(fractions.Fraction), which is "exact decimal" in the sense of the contract:
only the final published values are rounded half-even to 6 decimals.  The one
irrational quantity, time_decay's 2^(-x), is computed with `decimal` at 80
significant digits.
"""

import json
import os
import re
import sys
from datetime import datetime, timezone
from decimal import Decimal, getcontext, localcontext, InvalidOperation
from fractions import Fraction

getcontext().prec = 80

DAY_MS = 86_400_000
PROCESSED_AT = "1970-01-01T00:00:00.000Z"  # ignored by the comparison

GROUP_RANK = {"preferred": 0, "standard": 1, "non_preferred": 2}
CREDIT_POLICIES = ("last_click", "first_click", "linear", "position_based", "time_decay")
SOURCES = ("tracking_link", "vanity_url", "unique_domain", "stat_tag", "app", "api")
CUSTOMER_STATUSES = ("new", "returning", "unknown")
PROMO_POLICIES = ("always", "if_involved", "if_winner")
KINDS = ("standard", "creator")
SCOPES = ("all", "specific")

TOPICS = ("clicks", "conversions", "identities", "promo_codes", "config")


# ---------------------------------------------------------------- JSON numbers

class JNum:
    """A JSON number kept as its source text."""
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return "JNum(%s)" % self.text


def _bad_constant(name):
    raise ValueError("non-JSON constant " + name)


def parse_json(text):
    return json.loads(text, parse_float=JNum, parse_int=JNum, parse_constant=_bad_constant)


def enc(v):
    """Serialize compactly; JNum is written as its original text."""
    if isinstance(v, JNum):
        return v.text
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + enc(x) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(enc(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False)


# ---------------------------------------------------------------- helpers

class Bad(Exception):
    pass


TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$")
DEC_RE = re.compile(r"^-?[0-9]+(?:\.[0-9]+)?$")
INT_RE = re.compile(r"^-?[0-9]+$")
NUM_RE = re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$")


def parse_time(s):
    m = TIME_RE.match(s)
    if not m:
        raise Bad("bad time %r" % s)
    y, mo, d, h, mi, se = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    ms = int((frac + "000")[:3])
    try:
        dt = datetime(y, mo, d, h, mi, se, tzinfo=timezone.utc)
    except ValueError:
        raise Bad("bad time %r" % s)
    off = 0
    if m.group(9):
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise Bad("bad offset %r" % s)
        off = (oh * 60 + om) * 60_000
        if m.group(9) == "-":
            off = -off
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    delta = dt - epoch
    base = (delta.days * 86400 + delta.seconds) * 1000
    return base + ms - off


def fmt_time(ms):
    sec, milli = divmod(ms, 1000)
    dt = datetime.fromtimestamp(sec, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % milli


def ascii_upper(s):
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in s)


def round6(x):
    """Round a Fraction half-even to 6 decimals; returns an int count of micro-units."""
    n = x * 1_000_000
    fl = n.numerator // n.denominator
    rem = n - fl
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2 == 1):
        fl += 1
    return fl


def fmt_micro(m):
    sign = "-" if m < 0 else ""
    m = abs(m)
    return "%s%d.%06d" % (sign, m // 1_000_000, m % 1_000_000)


def micro_frac(m):
    return Fraction(m, 1_000_000)


# field getters: null means absent
def f_str(o, k, req=False):
    v = o.get(k)
    if v is None:
        if req:
            raise Bad("missing " + k)
        return None
    if not isinstance(v, str):
        raise Bad(k + ": not a string")
    return v


def f_bool(o, k, req=False):
    v = o.get(k)
    if v is None:
        if req:
            raise Bad("missing " + k)
        return None
    if not isinstance(v, bool):
        raise Bad(k + ": not a boolean")
    return v


def f_time(o, k, req=False):
    v = f_str(o, k, req)
    if v is None:
        return None
    return parse_time(v)


def to_dec(v, k):
    if isinstance(v, JNum):
        if not NUM_RE.match(v.text):
            raise Bad(k + ": bad number")
        try:
            return Decimal(v.text)
        except InvalidOperation:
            raise Bad(k + ": bad number")
    if isinstance(v, str):
        if not DEC_RE.match(v):
            raise Bad(k + ": bad decimal string")
        return Decimal(v)
    raise Bad(k + ": not a decimal")


def f_dec(o, k, req=False):
    v = o.get(k)
    if v is None:
        if req:
            raise Bad("missing " + k)
        return None
    return to_dec(v, k)


def f_int(o, k, req=False):
    v = o.get(k)
    if v is None:
        if req:
            raise Bad("missing " + k)
        return None
    if isinstance(v, JNum) and INT_RE.match(v.text):
        return int(v.text)
    raise Bad(k + ": not an integer")


def f_enum(o, k, allowed, req=False):
    v = f_str(o, k, req)
    if v is not None and v not in allowed:
        raise Bad(k + ": unknown value %r" % v)
    return v


def f_strlist(o, k):
    v = o.get(k)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise Bad(k + ": not a list of strings")
    return v


def f_obj(o, k):
    v = o.get(k)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise Bad(k + ": not an object")
    return v


def check_type(o, allowed, default):
    t = o.get("type")
    if t is None:
        t = default
    if not isinstance(t, str):
        raise Bad("type: not a string")
    if t not in allowed:
        raise Bad("type %r does not belong on this topic" % t)
    return t


# ---------------------------------------------------------------- config validation

def v_program(o):
    p = {
        "program_id": f_str(o, "program_id", True),
        "account_id": f_str(o, "account_id", True),
        "kind": f_enum(o, "kind", KINDS) or "standard",
        "currency": f_str(o, "currency"),
        "window_days": f_int(o, "referral_window_days"),
        "credit_policy": f_enum(o, "credit_policy", CREDIT_POLICIES) or "last_click",
        "half_life": f_dec(o, "time_decay_half_life_days"),
        "locking_days": f_int(o, "locking_days"),
        "min_secs": f_int(o, "min_click_to_conversion_secs"),
    }
    if p["window_days"] is None:
        p["window_days"] = 30
    if p["half_life"] is None:
        p["half_life"] = Decimal(7)
    if p["locking_days"] is None:
        p["locking_days"] = 45
    if p["min_secs"] is None:
        p["min_secs"] = 0
    if p["window_days"] < 0:
        raise Bad("negative referral_window_days")
    if p["locking_days"] < 0:
        raise Bad("negative locking_days")
    if p["min_secs"] < 0:
        raise Bad("negative min_click_to_conversion_secs")
    if p["half_life"] <= 0:
        raise Bad("non-positive time_decay_half_life_days")
    return p


def v_rate(r, where):
    if not isinstance(r, dict):
        raise Bad(where + ": rate not an object")
    pct = f_dec(r, "percent")
    fix = f_dec(r, "fixed")
    if (pct is None) == (fix is None):
        raise Bad(where + ": rate needs exactly one of percent/fixed")
    if pct is not None and not (0 <= pct <= 100):
        raise Bad(where + ": percent outside 0-100")
    if fix is not None and fix < 0:
        raise Bad(where + ": negative fixed")
    return (Fraction(pct) if pct is not None else None, Fraction(fix) if fix is not None else None)


def v_contract(o):
    c = {
        "program_id": f_str(o, "program_id", True),
        "partner_id": f_str(o, "partner_id", True),
        "active_from": f_time(o, "active_from", True),
        "active_to": f_time(o, "active_to"),
        "credit_group": f_enum(o, "credit_group", tuple(GROUP_RANK)) or "preferred",
        "window_days": f_int(o, "referral_window_days"),
        "event_types": f_strlist(o, "event_types"),
        "payout": None,
    }
    if c["active_to"] is not None and c["active_to"] < c["active_from"]:
        raise Bad("active_to before active_from")
    if c["window_days"] is not None and c["window_days"] < 0:
        raise Bad("negative referral_window_days")
    po = f_obj(o, "payout")
    if po is not None:
        dflt = po.get("default")
        default = v_rate(dflt, "default") if dflt is not None else None
        groups = []
        gl = po.get("groups")
        if gl is not None:
            if not isinstance(gl, list):
                raise Bad("groups: not a list")
            for i, g in enumerate(gl):
                if not isinstance(g, dict):
                    raise Bad("group not an object")
                w = f_obj(g, "when") or {}
                when = {
                    "customer_status": f_enum(w, "customer_status", CUSTOMER_STATUSES),
                    "categories": f_strlist(w, "categories"),
                    "skus": f_strlist(w, "skus"),
                }
                if g.get("rate") is None:
                    raise Bad("group %d: missing rate" % i)
                groups.append((when, v_rate(g["rate"], "group %d" % i)))
        c["payout"] = {"default": default, "groups": groups}
    return c


def v_cross(o, programs):
    x = {
        "account_id": f_str(o, "account_id", True),
        "enabled": f_bool(o, "enabled", True),
        "scope": f_enum(o, "scope", SCOPES) or "all",
        "programs": f_strlist(o, "programs"),
    }
    for pid in x["programs"] or []:
        p = programs.get("program/" + pid)
        if p is not None and p["account_id"] != x["account_id"]:
            raise Bad("programs names %s of account %s" % (pid, p["account_id"]))
    return x


def v_promo(o):
    a = {
        "program_id": f_str(o, "program_id", True),
        "code": f_str(o, "code", True),
        "partner_id": f_str(o, "partner_id", True),
        "policy": f_enum(o, "credit_policy", PROMO_POLICIES, True),
        "valid_from": f_time(o, "valid_from"),
        "valid_to": f_time(o, "valid_to"),
    }
    if a["valid_from"] is not None and a["valid_to"] is not None and a["valid_to"] < a["valid_from"]:
        raise Bad("valid_to before valid_from")
    return a


# ---------------------------------------------------------------- journey record validation

def v_click(o):
    check_type(o, ("click",), "click")
    c = {
        "click_id": f_str(o, "click_id", True),
        "program_id": f_str(o, "program_id", True),
        "partner_id": f_str(o, "partner_id", True),
        "t": f_time(o, "occurred_at", True),
        "device_id": f_str(o, "device_id"),
        "customer_id": f_str(o, "customer_id"),
        "media_id": f_str(o, "media_id"),
        "shared_id": f_str(o, "shared_id"),
        "sub_ids": f_strlist(o, "sub_ids"),
        "source": f_enum(o, "source", SOURCES),
        "landing_url": f_str(o, "landing_url"),
    }
    if c["shared_id"] is not None and len(c["shared_id"]) > 255:
        raise Bad("shared_id longer than 255")
    return c


def nonneg(d, k):
    if d is not None and d < 0:
        raise Bad(k + " negative")
    return d


def whole_nonneg(d, k):
    if d < 0 or d != d.to_integral_value():
        raise Bad(k + ": quantity must be >= 0 and whole")
    return d


def v_change(o):
    t = check_type(o, ("conversion", "modification", "reversal"), "conversion")
    r = {
        "type": t,
        "program_id": f_str(o, "program_id", True),
        "event_type": f_str(o, "event_type", True),
        "order_id": f_str(o, "order_id", True),
        "t": f_time(o, "occurred_at", True),
        "device_id": f_str(o, "device_id"),
        "customer_id": f_str(o, "customer_id"),
    }
    if t == "conversion":
        r["click_id"] = f_str(o, "click_id")
        r["promo_code"] = f_str(o, "promo_code")
        r["customer_status"] = f_enum(o, "customer_status", CUSTOMER_STATUSES) or "unknown"
        r["currency"] = f_str(o, "currency")
        r["subtotal"] = nonneg(f_dec(o, "order_subtotal"), "order_subtotal")
        r["discount"] = nonneg(f_dec(o, "order_discount"), "order_discount")
        nonneg(f_dec(o, "order_tax"), "order_tax")
        nonneg(f_dec(o, "order_shipping"), "order_shipping")
        r["test"] = bool(f_bool(o, "test"))
        il = o.get("items")
        items = []
        if il is not None:
            if not isinstance(il, list):
                raise Bad("items: not a list")
            seen = set()
            for it in il:
                if not isinstance(it, dict):
                    raise Bad("item not an object")
                sku = f_str(it, "sku")
                cat = f_str(it, "category")
                q = f_dec(it, "quantity")
                q = Decimal(1) if q is None else whole_nonneg(q, "quantity")
                p = f_dec(it, "unit_price")
                p = Decimal(0) if p is None else nonneg(p, "unit_price")
                if sku is not None:
                    if sku in seen:
                        raise Bad("sku %r twice" % sku)
                    seen.add(sku)
                items.append({"sku": sku, "category": cat, "q": Fraction(q), "p": Fraction(p)})
        r["itemless"] = not items
        if not items:
            sub = r["subtotal"] if r["subtotal"] is not None else Decimal(0)
            items = [{"sku": None, "category": None, "q": Fraction(1), "p": Fraction(sub)}]
        r["items"] = items
        total = sum((i["q"] * i["p"] for i in items), Fraction(0))
        if r["discount"] is not None and Fraction(r["discount"]) > total:
            raise Bad("order_discount greater than the item total")
    elif t == "modification":
        r["subtotal"] = nonneg(f_dec(o, "order_subtotal"), "order_subtotal")
        f_str(o, "reason")
        il = o.get("items")
        mods = []
        if il is not None:
            if not isinstance(il, list):
                raise Bad("items: not a list")
            seen = set()
            for it in il:
                if not isinstance(it, dict):
                    raise Bad("item not an object")
                sku = f_str(it, "sku", True)
                q = whole_nonneg(f_dec(it, "quantity", True), "quantity")
                if sku in seen:
                    raise Bad("sku %r twice" % sku)
                seen.add(sku)
                mods.append((sku, Fraction(q)))
        r["mods"] = mods
    else:
        f_str(o, "reason")
    return r


def v_identify(o):
    check_type(o, ("identify",), "identify")
    return {
        "device_id": f_str(o, "device_id", True),
        "customer_id": f_str(o, "customer_id", True),
        "t": f_time(o, "occurred_at", True),
    }


# ---------------------------------------------------------------- engine

class Journey:
    __slots__ = ("clicks", "click_ids", "orders")

    def __init__(self):
        self.clicks = []      # dicts with seq, in arrival order
        self.click_ids = set()
        self.orders = {}      # (program, event_type, order_id) -> order dict


class Engine:
    def __init__(self, out, stitching=False):
        self.out = out
        self.stitching = stitching
        self.programs = {}
        self.contracts = {}
        self.cross = {}
        self.promos = {}
        # Journey keys: stitching off, the record's key string (§1); stitching on,
        # ("c", customer_id) for a customer's journey and ("d", device_id) for a
        # device's anonymous journey, so the two never meet even if the ids are equal.
        self.journeys = {}
        self.seq = 0
        # §6: device_id -> customer_id (the first link stands)
        self.links = {}
        # what §6 counts in the metrics (no output; read by selftest.py)
        self.counts = {"links": 0, "conflicts": 0, "moves": 0, "moved_clicks": 0,
                       "dropped_clicks": 0, "moved_orders": 0, "dropped_orders": 0}

    # ---- output
    def emit(self, topic, key, value, headers=None):
        s = '{"topic":' + json.dumps(topic) + ',"key":' + enc(key) + ',"value":' + enc(value)
        if headers is not None:
            s += ',"headers":' + json.dumps(headers, ensure_ascii=False, separators=(",", ":"))
        self.out.write(s + "}\n")

    def dlq(self, key, value, error, topic, offset):
        self.emit("dlq", key, value, {
            "attrib.error": error,
            "attrib.source.topic": topic,
            "attrib.source.partition": "0",
            "attrib.source.offset": str(offset),
        })

    # ---- input
    def line(self, raw, offset):
        text = raw.rstrip("\r\n")
        try:
            rec = parse_json(text)
        except ValueError as e:
            self.dlq(None, text, "not JSON: %s" % e, "replay", offset)
            return
        if not isinstance(rec, dict):
            self.dlq(None, text, "line is not an object", "replay", offset)
            return
        topic = rec.get("topic")
        if not isinstance(topic, str) or topic not in TOPICS:
            self.dlq(None, text, "unknown topic", topic if isinstance(topic, str) else "replay", offset)
            return
        if topic == "identities" and not self.stitching:
            return  # §6: with stitching off, identify records are not read at all
        key = rec.get("key")
        if key is not None and not isinstance(key, str):
            self.dlq(None, text, "key is not a string", "replay", offset)
            return
        value = rec.get("value")
        try:
            if topic == "config":
                self.on_config(key, value)
            elif topic == "promo_codes":
                self.on_promo(key, value)
            elif topic == "clicks":
                self.on_click(key, value)
            elif topic == "identities":
                self.on_identify(key, value)
            else:
                self.on_change(key, value)
        except Bad as e:
            self.dlq(key, value, str(e), topic, offset)

    # ---- tables
    def on_config(self, key, value):
        if key is None:
            raise Bad("config record without key")
        parts = key.split("/")
        shape_ok = (len(parts) == 2 and parts[0] in ("program", "cross_program") and parts[1]) or \
                   (len(parts) == 3 and parts[0] == "contract" and parts[1] and parts[2])
        if value is None:
            if not shape_ok:
                raise Bad("tombstone with malformed key")
            if parts[0] == "program":
                self.programs.pop(key, None)
            elif parts[0] == "contract":
                self.contracts.pop(key, None)
            else:
                self.cross.pop(key, None)
            return
        if not isinstance(value, dict):
            raise Bad("value not an object")
        t = value.get("type")
        if t is None and shape_ok:
            t = parts[0]  # a missing type is the key's
        if not isinstance(t, str) or t not in ("program", "contract", "cross_program"):
            raise Bad("unknown config type")
        if t == "program":
            p = v_program(value)
            if key != "program/" + p["program_id"]:
                raise Bad("key does not match value")
            self.programs[key] = p
        elif t == "contract":
            c = v_contract(value)
            if key != "contract/%s/%s" % (c["program_id"], c["partner_id"]):
                raise Bad("key does not match value")
            self.contracts[key] = c
        else:
            x = v_cross(value, self.programs)
            if key != "cross_program/" + x["account_id"]:
                raise Bad("key does not match value")
            self.cross[key] = x

    def on_promo(self, key, value):
        if key is None:
            raise Bad("promo record without key")
        if value is None:
            self.promos.pop(key, None)
            return
        if not isinstance(value, dict):
            raise Bad("value not an object")
        check_type(value, ("promo_code",), "promo_code")
        a = v_promo(value)
        if key != a["program_id"] + "/" + ascii_upper(a["code"]):
            raise Bad("key does not match value")
        self.promos[key] = a

    # ---- journeys
    @staticmethod
    def journey_key(key, value):
        if key is not None:
            return key
        for f in ("device_id", "customer_id"):
            v = value.get(f)
            if isinstance(v, str):
                return v
        raise Bad("no key: neither device_id nor customer_id")

    def journey(self, k):
        j = self.journeys.get(k)
        if j is None:
            j = self.journeys[k] = Journey()
        return j

    # ---- §6 identity stitching
    def route(self, key, r, kind):
        """Stitching on: check the key rules, apply the record's link (moving the
        device's anonymous journey first) and return the journey the record belongs to."""
        dev, cust = r["device_id"], r["customer_id"]
        if dev is not None and key is not None and key != dev:
            raise Bad("key %s is not the record's device_id %s" % (json.dumps(key), json.dumps(dev)))
        if kind in ("modification", "reversal"):
            if dev is None and cust is None:
                raise Bad("%s carries neither device_id nor customer_id" % kind)
        elif dev is not None and cust is not None:
            self.link(dev, cust)
        if cust is not None:
            return ("c", cust)
        if dev is None:
            if key is None:
                raise Bad("no key: neither device_id nor customer_id")
            dev = key  # a click or conversion without ids belongs to the device of its key
        linked = self.links.get(dev)
        return ("c", linked) if linked is not None else ("d", dev)

    def link(self, dev, cust):
        cur = self.links.get(dev)
        if cur is not None:
            if cur != cust:
                self.counts["conflicts"] += 1  # the first link stands
            return
        self.links[dev] = cust
        self.counts["links"] += 1
        anon = self.journeys.pop(("d", dev), None)
        if anon is not None:
            self.move(anon, self.journey(("c", cust)))

    def move(self, src, dst):
        """The anonymous journey src joins dst: its clicks arrive now, in their own
        order, after dst's; dst's click ids and orders win collisions."""
        self.counts["moves"] += 1
        for c in src.clicks:  # in arrival order
            if c["click_id"] in dst.click_ids:
                self.counts["dropped_clicks"] += 1
                continue
            dst.click_ids.add(c["click_id"])
            self.seq += 1
            c["seq"] = self.seq
            dst.clicks.append(c)
            self.counts["moved_clicks"] += 1
        for okey, o in src.orders.items():
            if okey in dst.orders:
                self.counts["dropped_orders"] += 1
                continue
            dst.orders[okey] = o
            self.counts["moved_orders"] += 1

    def on_identify(self, key, value):
        if value is None:
            raise Bad("tombstone on identities")
        if not isinstance(value, dict):
            raise Bad("value not an object")
        r = v_identify(value)
        if key is not None and key != r["device_id"]:
            raise Bad("key %s is not the record's device_id %s" % (json.dumps(key), json.dumps(r["device_id"])))
        self.link(r["device_id"], r["customer_id"])

    def on_click(self, key, value):
        if value is None:
            raise Bad("tombstone on clicks")
        if not isinstance(value, dict):
            raise Bad("value not an object")
        c = v_click(value)
        k = self.route(key, c, "click") if self.stitching else self.journey_key(key, value)
        j = self.journey(k)
        if c["click_id"] in j.click_ids:
            return  # duplicate: the first one stands
        j.click_ids.add(c["click_id"])
        self.seq += 1
        c["seq"] = self.seq
        j.clicks.append(c)

    def on_change(self, key, value):
        if value is None:
            raise Bad("tombstone on conversions")
        if not isinstance(value, dict):
            raise Bad("value not an object")
        r = v_change(value)
        k = self.route(key, r, r["type"]) if self.stitching else self.journey_key(key, value)
        if r["type"] == "conversion":
            self.on_conversion(k, r)
        else:
            self.on_modify(k, r)

    # ---- rule helpers
    def contract(self, pid, partner):
        return self.contracts.get("contract/%s/%s" % (pid, partner))

    @staticmethod
    def active(c, t):
        return c is not None and c["active_from"] <= t and (c["active_to"] is None or t < c["active_to"])

    @staticmethod
    def covers(c, et):
        return c["event_types"] is None or et in c["event_types"]

    def program_cond(self, P, cprog):
        if cprog == P["program_id"]:
            return True
        other = self.programs.get("program/" + cprog)
        if other is None or other["account_id"] != P["account_id"]:
            return False
        if P["kind"] == "creator" or other["kind"] == "creator":
            return False
        x = self.cross.get("cross_program/" + P["account_id"])
        if x is None or not x["enabled"]:
            return False
        if x["scope"] == "all":
            return True
        progs = x["programs"] or []
        return P["program_id"] in progs and cprog in progs

    def time_cond(self, P, c, T):
        if c["t"] > T:
            return False
        ct = self.contract(P["program_id"], c["partner_id"])
        wd = ct["window_days"] if ct is not None and ct["window_days"] is not None else P["window_days"]
        d = T - c["t"]
        return d <= wd * DAY_MS and d >= P["min_secs"] * 1000

    # ---- money
    @staticmethod
    def bases(order):
        items = order["items"]
        amts = [i["q"] * i["p"] for i in items]
        A = sum(amts, Fraction(0))
        D = Fraction(order["discount"]) if order["discount"] is not None else Fraction(0)
        if D > A:
            D = A
        if A == 0:
            return amts
        return [a - D * a / A for a in amts]

    @staticmethod
    def contract_total(terms, items, bases, status):
        if terms is None:
            return Fraction(0)
        total = Fraction(0)
        taken = {}
        for it, b in zip(items, bases):
            if it["q"] == 0:
                continue
            rate, gid = None, None
            for gi, (w, r) in enumerate(terms["groups"]):
                if w["customer_status"] is not None and w["customer_status"] != status:
                    continue
                if w["categories"] is not None and it["category"] not in w["categories"]:
                    continue
                if w["skus"] is not None and it["sku"] not in w["skus"]:
                    continue
                rate, gid = r, gi
                break
            if rate is None:
                rate, gid = terms["default"], "default"
            if rate is None:
                continue
            pct, fix = rate
            if pct is not None:
                total += pct / 100 * b
            else:
                taken[gid] = fix
        for fix in taken.values():
            total += fix
        return total

    def payouts(self, order):
        """(amount_micro, payout_micro, [credit payout micro])"""
        bases = self.bases(order)
        amount = round6(sum(bases, Fraction(0)))
        exact = [cr["w"] * self.contract_total(cr["terms"], order["items"], bases, order["customer_status"])
                 for cr in order["credits"]]
        payout = round6(sum(exact, Fraction(0)))
        pubs = [round6(e) for e in exact[:-1]]
        pubs.append(payout - sum(pubs))
        return amount, payout, pubs

    # ---- attribution
    def invalid(self, r, reason, detail, src=None):
        s = src or {}
        v = {
            "type": "invalid_action",
            "program_id": r["program_id"],
            "event_type": r["event_type"],
            "order_id": r["order_id"],
            "occurred_at": fmt_time(r["t"]),
            "device_id": s.get("device_id", r.get("device_id")),
            "customer_id": s.get("customer_id", r.get("customer_id")),
            "promo_code": s.get("promo_code", r.get("promo_code")),
            "reason": reason,
            "detail": detail,
            "test": bool(s.get("test", r.get("test", False))),
        }
        self.emit("invalid_actions", "%s/%s/%s" % (r["program_id"], r["event_type"], r["order_id"]), v)

    def on_conversion(self, key, r):
        P = self.programs.get("program/" + r["program_id"])
        if P is None:
            self.invalid(r, "unknown_program", "no program config")
            return
        j = self.journey(key)
        okey = (r["program_id"], r["event_type"], r["order_id"])
        if okey in j.orders:
            self.invalid(r, "duplicate_order", "order seen before")
            return
        T, et, pid = r["t"], r["event_type"], r["program_id"]
        order = dict(r)
        order["credited"] = False
        j.orders[okey] = order

        prog_ok = [c for c in j.clicks if self.program_cond(P, c["program_id"])]
        time_ok = [c for c in prog_ok if self.time_cond(P, c, T)]
        eligible = []
        for c in time_ok:
            ct = self.contract(pid, c["partner_id"])
            if self.active(ct, T) and self.covers(ct, et):
                eligible.append(c)

        policy = P["credit_policy"]
        first = policy == "first_click"
        parts = {}  # partner -> standing click
        for c in eligible:
            s = parts.get(c["partner_id"])
            ck = (c["t"], c["seq"])
            if s is None or (ck < (s["t"], s["seq"]) if first else ck > (s["t"], s["seq"])):
                parts[c["partner_id"]] = c

        def rank(partner):
            return GROUP_RANK[self.contract(pid, partner)["credit_group"]]

        best = min((rank(p) for p in parts), default=None)

        # promo code
        code = r["promo_code"]
        assign, code_state = None, None
        if code is not None:
            a = self.promos.get(pid + "/" + ascii_upper(code))
            if a is not None and (a["valid_from"] is None or a["valid_from"] <= T) and \
                    (a["valid_to"] is None or T < a["valid_to"]):
                qc = self.contract(pid, a["partner_id"])
                if self.active(qc, T) and self.covers(qc, et):
                    assign, code_state = a, "ok"
                else:
                    code_state = "partner_not_active"
            else:
                code_state = "not_assigned"

        credits = []
        promo_credit = False
        if assign is not None:
            q = assign["partner_id"]
            qrank = rank(q)
            if assign["policy"] == "always":
                promo_credit = best is None or best >= qrank
            elif assign["policy"] == "if_involved":
                promo_credit = q in parts and best >= qrank
        if promo_credit:
            credits.append({
                "partner_id": assign["partner_id"], "w": Fraction(1), "pub_w": 1_000_000,
                "referral_type": "promo_code", "click_id": None, "device_id": None, "promo_code": code,
                "referring_at": T, "shared_id": None, "sub_ids": [],
                "terms": self.contract(pid, assign["partner_id"])["payout"],
            })
        elif parts:
            comp = sorted((c for p, c in parts.items() if rank(p) == best), key=lambda c: (c["t"], c["seq"]))
            n = len(comp)
            if policy == "last_click":
                chosen, ws = [comp[-1]], [Fraction(1)]
            elif policy == "first_click":
                chosen, ws = [comp[0]], [Fraction(1)]
            elif policy == "linear":
                chosen, ws = comp, [Fraction(1, n)] * n
            elif policy == "position_based":
                chosen = comp
                if n == 1:
                    ws = [Fraction(1)]
                elif n == 2:
                    ws = [Fraction(1, 2)] * 2
                else:
                    ws = [Fraction(2, 5)] + [Fraction(1, 5) / (n - 2)] * (n - 2) + [Fraction(2, 5)]
            else:  # time_decay
                chosen = comp
                H = Decimal(P["half_life"]) * DAY_MS
                with localcontext() as ctx:
                    ctx.prec = 80
                    ln2 = Decimal(2).ln()
                    raws = [Fraction((-(Decimal(T - c["t"]) / H) * ln2).exp()) for c in comp]
                tot = sum(raws, Fraction(0))
                ws = [x / tot for x in raws]
            pubs = [round6(w) for w in ws[:-1]]
            pubs.append(1_000_000 - sum(pubs))
            for c, w, pw in zip(chosen, ws, pubs):
                credits.append({
                    "partner_id": c["partner_id"], "w": w, "pub_w": pw,
                    "referral_type": "click" if c["program_id"] == pid else "cross_program_click",
                    "click_id": c["click_id"], "device_id": c["device_id"], "promo_code": None,
                    "referring_at": c["t"],
                    "shared_id": c["shared_id"], "sub_ids": list(c["sub_ids"] or []),
                    "terms": self.contract(pid, c["partner_id"])["payout"],
                })
            if assign is not None and assign["policy"] == "if_winner":
                for cr in credits:
                    if cr["partner_id"] == assign["partner_id"]:
                        cr["promo_code"] = code

        if not credits:
            if code_state == "not_assigned":
                reason = "promo_code_not_assigned"
            elif code_state == "partner_not_active":
                reason = "partner_not_active"
            elif not prog_ok:
                reason = "no_valid_referrer"
            elif not time_ok:
                reason = "outside_referral_window"
            elif not any(self.active(self.contract(pid, c["partner_id"]), T) for c in time_ok):
                reason = "partner_not_active"
            else:
                reason = "event_type_not_in_contract"
            self.invalid(r, reason, "nobody credited")
            return

        tps = sorted(time_ok, key=lambda c: (c["t"], c["seq"]))
        total = len(tps)
        if total > 50:
            tps = tps[:1] + tps[-49:]
        order.update({
            "credited": True,
            "reversed": False,
            "credits": credits,
            "currency": r["currency"] if r["currency"] is not None else P["currency"],
            "locking_at": T + P["locking_days"] * DAY_MS,
            "journey": {
                "touchpoints": [{"click_id": c["click_id"], "device_id": c["device_id"],
                                 "program_id": c["program_id"],
                                 "partner_id": c["partner_id"], "occurred_at": fmt_time(c["t"])} for c in tps],
                "total": total,
            },
        })
        amount, payout, cpays = self.payouts(order)
        self.emit_action(order, "created", amount, payout, amount, payout, cpays)
        order["last_amount"], order["last_payout"] = amount, payout

    def emit_action(self, o, change, amount, payout, d_amount, d_payout, cpays):
        v = {
            "type": "action",
            "action_id": "ID:%s|%s|%s" % (o["program_id"], o["event_type"], o["order_id"]),
            "change": change,
            "state": "reversed" if o["reversed"] else "pending",
            "program_id": o["program_id"],
            "event_type": o["event_type"],
            "order_id": o["order_id"],
            "occurred_at": fmt_time(o["t"]),
            "processed_at": PROCESSED_AT,
            "device_id": o["device_id"],
            "customer_id": o["customer_id"],
            "customer_status": o["customer_status"],
            "currency": o["currency"],
            "amount": fmt_micro(amount),
            "delta_amount": fmt_micro(d_amount),
            "payout": fmt_micro(payout),
            "delta_payout": fmt_micro(d_payout),
            "credits": [{
                "partner_id": cr["partner_id"],
                "weight": fmt_micro(cr["pub_w"]),
                "payout": fmt_micro(cp),
                "referral_type": cr["referral_type"],
                "click_id": cr["click_id"],
                "device_id": cr["device_id"],
                "promo_code": cr["promo_code"],
                "referring_at": fmt_time(cr["referring_at"]),
                "shared_id": cr["shared_id"],
                "sub_ids": cr["sub_ids"],
            } for cr, cp in zip(o["credits"], cpays)],
            "journey": o["journey"],
            "promo_code": o["promo_code"],
            "click_id": o["click_id"],
            "locking_at": fmt_time(o["locking_at"]),
            "test": o["test"],
        }
        self.emit("actions", v["action_id"], v)

    def on_modify(self, key, r):
        j = self.journeys.get(key)
        okey = (r["program_id"], r["event_type"], r["order_id"])
        o = j.orders.get(okey) if j is not None else None
        if o is None or not o["credited"]:
            self.invalid(r, "unknown_order", "no credited order", o)
            return
        if o["reversed"]:
            self.invalid(r, "already_reversed", "action reversed", o)
            return
        if r["t"] >= o["locking_at"]:
            self.invalid(r, "action_locked", "change at or after locking", o)
            return
        if r["type"] == "reversal":
            o["reversed"] = True
            amount, payout = 0, 0
            cpays = [0] * len(o["credits"])
            change = "reversed"
        else:
            qty = dict(r["mods"])
            for it in o["items"]:
                if it["sku"] is not None and it["sku"] in qty:
                    it["q"] = qty[it["sku"]]
            if o["itemless"] and r["subtotal"] is not None:
                o["items"][0]["p"] = Fraction(r["subtotal"])
            amount, payout, cpays = self.payouts(o)
            change = "modified"
        self.emit_action(o, change, amount, payout, amount - o["last_amount"], payout - o["last_payout"], cpays)
        o["last_amount"], o["last_payout"] = amount, payout


USAGE = "usage: attrib_ref.py [--stitching] [--config FILE] IN.jsonl > OUT.jsonl\n"


def parse_bool(text, where):
    t = text.strip().lower()
    if t in ("true", "1"):
        return True
    if t in ("false", "0", ""):
        return False
    raise ValueError("%s: %r is not true/false/1/0" % (where, text))


def stitching_setting(flag, config_path, environ):
    """--stitching > ATTRIB_IDENTITY_STITCHING > identity.stitching in --config > off."""
    if flag:
        return True
    env = environ.get("ATTRIB_IDENTITY_STITCHING")
    if env is not None:
        return parse_bool(env, "ATTRIB_IDENTITY_STITCHING")
    if config_path is not None:
        import tomllib
        with open(config_path, "rb") as f:
            cfg = tomllib.load(f)
        v = (cfg.get("identity") or {}).get("stitching")
        if v is None:
            return False
        if isinstance(v, bool):
            return v
        if isinstance(v, str):
            return parse_bool(v, "identity.stitching")
        raise ValueError("identity.stitching: not a boolean")
    return False


def main():
    args = sys.argv[1:]
    flag, config_path, paths = False, None, []
    while args:
        a = args.pop(0)
        if a == "--":
            paths.extend(args)
            break
        if a == "--stitching":
            flag = True
        elif a == "--config" and args:
            config_path = args.pop(0)
        elif a.startswith("--config="):
            config_path = a[len("--config="):]
        elif a.startswith("--"):
            sys.stderr.write(USAGE)
            sys.exit(2)
        else:
            paths.append(a)
    if len(paths) != 1:
        sys.stderr.write(USAGE)
        sys.exit(2)
    try:
        stitching = stitching_setting(flag, config_path, os.environ)
    except (ValueError, OSError) as e:
        sys.stderr.write("attrib_ref.py: %s\n" % e)
        sys.exit(2)
    out = sys.stdout
    eng = Engine(out, stitching)
    with open(paths[0], "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file's final newline ends the last line
    for offset, raw in enumerate(lines):
        eng.line(raw.decode("utf-8", errors="replace"), offset)
    out.flush()


if __name__ == "__main__":
    main()
