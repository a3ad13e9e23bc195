#!/usr/bin/env python3
"""Random `attrib replay` input streams covering the rules of docs/design.md §1-§3 (and §6).

Usage: python3 gen_stream.py SEED N [--stitching] > stream.jsonl

About N lines.  Deterministic for a given SEED (only random.Random(SEED) is used).
With --stitching the stream is a cross-device one for `attrib replay` with identity
stitching on (docs/design.md §6): customers with 2-3 devices, anonymous browsing, identify
records, logins on clicks and conversions, conflicting links, changes keyed by device
or carrying customer_id, click-id and order collisions on a move, equal times across
devices, and a few records that break §6's key rules.  Without the flag the output is
exactly what it was before §6 existed.
The stream stays inside the territory docs/design.md decides (see README.md in
this folder): no blank lines, no malformed table tombstone keys, no
money strings in exotic syntaxes, no numbers with exponents, no non-string keys.
Disorder is kept small (clicks up to 10 min early, records up to 3 h late) and
late changes come at most 12 h after locking, so retention plays no part.
"""

import json
import sys
import random
from datetime import datetime, timezone, timedelta

DAY = 86_400_000
HOUR = 3_600_000
MIN = 60_000

START = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp() * 1000)

PARTNERS = ["pa%02d" % i for i in range(1, 15)]
CATEGORIES = ["shoes", "hats", "bags", "books", "toys", None]
SKUS = ["SKU-%d" % i for i in range(1, 25)]
EVENT_TYPES = ["sale"] * 8 + ["lead", "lead", "install", "signup"]
SOURCES = ["tracking_link", "vanity_url", "unique_domain", "stat_tag", "app", "api"]

# program_id -> static settings (some change mid-stream)
PROGRAMS = {
    "p1": dict(account_id="acme", kind="standard", currency="USD", referral_window_days=30,
               credit_policy="last_click", locking_days=45),
    "p2": dict(account_id="acme", kind="standard", currency="EUR", referral_window_days=14,
               credit_policy="linear", locking_days=20, min_click_to_conversion_secs=0),
    "p3": dict(account_id="acme", referral_window_days=7, credit_policy="position_based",
               min_click_to_conversion_secs=120, locking_days=10),
    "pc": dict(account_id="acme", kind="creator", currency="USD", credit_policy="time_decay",
               time_decay_half_life_days="2.5", locking_days=30),
    "g1": dict(account_id="globex", kind="standard", currency="GBP", credit_policy="time_decay",
               referral_window_days=30),
    "g2": dict(account_id="globex", credit_policy="first_click", referral_window_days=21, locking_days=15),
    "g3": dict(account_id="globex"),
}
ACCOUNT_PROGRAMS = {"acme": ["p1", "p2", "p3", "pc"], "globex": ["g1", "g2", "g3"]}

CODE_WORDS = ["SAVE10", "Spring-Sale", "vip20", "WELCOME", "FreeShip", "bf2026", "Creator_Kim", "x9", "Hello"]


def case_mix(rng, s):
    r = rng.random()
    if r < 0.5:
        return s
    if r < 0.7:
        return s.lower()
    if r < 0.85:
        return s.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in s)


class Gen:
    def __init__(self, seed, n, stitching=False):
        self.stitching = stitching
        self.rng = random.Random(seed)
        self.n = n
        self.out = []          # (emit_ms, seq, line)
        self.seq = 0
        self.span = max(60, min(300, n // 250)) * DAY   # stream duration
        self.programs = {}     # current program settings (for the generator's own choices)
        self.contracts = {}    # (program, partner) -> contract value
        self.codes = {}        # program -> list of code strings
        self.order_no = 0
        self.click_no = 0
        self.devices = []
        self.customers = []
        # --stitching model (unused otherwise)
        self.people = []       # customers: {"id": customer_id, "devices": [device ids]}
        self.anon = []         # devices that never log in
        self.linked = {}       # device -> customer, in generation order (an estimate of the links)
        self.logged_clicks = {}  # customer -> recent click ids made while logged in

    # ---------------------------------------------------------------- output
    def put(self, emit, topic, key, value):
        self.seq += 1
        line = json.dumps({"topic": topic, "key": key, "value": value}, separators=(",", ":"),
                          ensure_ascii=False)
        self.out.append((emit, self.seq, line))

    def put_raw(self, emit, line):
        self.seq += 1
        self.out.append((emit, self.seq, line))

    def ts(self, ms, plain_ok=True):
        """An RFC 3339 time in a random but equivalent spelling."""
        rng = self.rng
        r = rng.random()
        dt = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
        frac = ms % 1000
        if r < 0.06:
            off = rng.choice([120, -300, 330, 0, -600])
            loc = dt + timedelta(minutes=off)
            sign = "+" if off >= 0 else "-"
            o = "%s%02d:%02d" % (sign, abs(off) // 60, abs(off) % 60)
            return loc.strftime("%Y-%m-%dT%H:%M:%S") + ".%03d" % frac + o
        if r < 0.12:
            return dt.strftime("%Y-%m-%dT%H:%M:%S") + ".%03d%03dZ" % (frac, rng.randrange(1000))
        if frac == 0 and plain_ok and r < 0.6:
            return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        return dt.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % frac

    def money(self, cents, scale=2):
        """Money as a string or (sometimes) a JSON number."""
        s = "%d.%0*d" % (cents // 10 ** scale, scale, cents % 10 ** scale)
        r = self.rng.random()
        if r < 0.12:
            return float(s) if "." in s else int(s)
        if r < 0.18 and cents % 10 ** scale == 0:
            return cents // 10 ** scale
        if r < 0.24 and cents % 10 ** scale == 0:
            return str(cents // 10 ** scale)
        return s

    # ---------------------------------------------------------------- config
    def program_value(self, pid, **over):
        v = {"type": "program", "program_id": pid}
        v.update(PROGRAMS[pid])
        v.update(over)
        return v

    def put_program(self, t, pid, **over):
        v = self.program_value(pid, **over)
        self.programs[pid] = v
        self.put(t, "config", "program/" + pid, v)

    def window(self, pid, partner):
        c = self.contracts.get((pid, partner))
        if c and c.get("referral_window_days") is not None:
            return c["referral_window_days"]
        p = self.programs.get(pid) or {}
        return p.get("referral_window_days") or 30

    def rate(self):
        rng = self.rng
        if rng.random() < 0.6:
            return {"percent": self.money(rng.choice([500, 750, 1000, 1250, 2000, 333, 0, 10000]))}
        return {"fixed": self.money(rng.choice([100, 250, 500, 1000, 0, 199]))}

    def payout(self):
        rng = self.rng
        r = rng.random()
        if r < 0.1:
            return None
        groups = []
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            when = {}
            if rng.random() < 0.4:
                when["customer_status"] = rng.choice(["new", "returning", "unknown"])
            if rng.random() < 0.5:
                when["categories"] = rng.sample([c for c in CATEGORIES if c], rng.randint(1, 2))
            if rng.random() < 0.35:
                when["skus"] = rng.sample(SKUS, rng.randint(1, 5))
            if rng.random() < 0.1:
                when = {}
            groups.append({"when": when, "rate": self.rate()})
        p = {}
        if rng.random() < 0.85:
            p["default"] = self.rate()
        elif rng.random() < 0.5:
            p["default"] = None
        if groups or rng.random() < 0.5:
            p["groups"] = groups
        return p

    def contract_value(self, pid, partner, t0):
        rng = self.rng
        v = {"type": "contract", "program_id": pid, "partner_id": partner,
             "active_from": self.ts(t0 - 30 * DAY if rng.random() < 0.85 else t0 + rng.randrange(self.span // 2))}
        if rng.random() < 0.2:
            v["active_to"] = self.ts(t0 + rng.randrange(self.span // 4, self.span))
        elif rng.random() < 0.3:
            v["active_to"] = None
        r = rng.random()
        if r < 0.25:
            v["credit_group"] = "standard"
        elif r < 0.38:
            v["credit_group"] = "non_preferred"
        elif r < 0.6:
            v["credit_group"] = "preferred"
        if rng.random() < 0.3:
            v["referral_window_days"] = rng.choice([3, 10, 45, 60, 0])
        r = rng.random()
        if r < 0.1:
            v["event_types"] = None
        elif r < 0.35:
            v["event_types"] = ["sale"]
        elif r < 0.45:
            v["event_types"] = ["sale", "lead", "install"]
        elif r < 0.5:
            v["event_types"] = []
        elif r < 0.55:
            v["event_types"] = ["lead", "signup"]
        p = self.payout()
        if p is not None or rng.random() < 0.5:
            v["payout"] = p
        return v

    def put_contract(self, t, pid, partner):
        v = self.contract_value(pid, partner, t)
        self.contracts[(pid, partner)] = v
        self.put(t, "config", "contract/%s/%s" % (pid, partner), v)

    def promo_value(self, pid, code, t0):
        rng = self.rng
        members = [pa for (p, pa) in self.contracts if p == pid]
        partner = rng.choice(members) if members and rng.random() < 0.85 else rng.choice(PARTNERS)
        v = {"type": "promo_code", "program_id": pid, "code": code, "partner_id": partner,
             "credit_policy": rng.choice(["always", "if_involved", "if_winner"])}
        r = rng.random()
        if r < 0.2:
            v["valid_from"] = self.ts(t0 + rng.randrange(self.span // 2))
        elif r < 0.4:
            v["valid_to"] = self.ts(t0 + rng.randrange(self.span // 3, self.span))
        elif r < 0.5:
            a = t0 + rng.randrange(self.span // 2)
            v["valid_from"] = self.ts(a)
            v["valid_to"] = self.ts(a + rng.randrange(DAY, self.span // 2))
        elif r < 0.6:
            v["valid_from"] = None
            v["valid_to"] = None
        return v

    def put_promo(self, t, pid, code):
        v = self.promo_value(pid, code, t)
        self.put(t, "promo_codes", pid + "/" + code.upper(), v)

    def cross_value(self, account):
        rng = self.rng
        progs = ACCOUNT_PROGRAMS[account]
        v = {"type": "cross_program", "account_id": account, "enabled": rng.random() < 0.8}
        r = rng.random()
        if r < 0.4:
            v["scope"] = "all"
        elif r < 0.8:
            v["scope"] = "specific"
            v["programs"] = rng.sample(progs, rng.randint(1, len(progs)))
        elif r < 0.9:
            v["scope"] = None
        else:
            v["programs"] = rng.sample(progs, 2)   # scope absent = all
        return v

    def initial_config(self):
        rng = self.rng
        t = START - 2 * DAY
        for pid in PROGRAMS:
            self.put_program(t, pid)
        for pid in PROGRAMS:
            for partner in rng.sample(PARTNERS, rng.randint(6, 10)):
                self.put_contract(t, pid, partner)
        for acct in ACCOUNT_PROGRAMS:
            self.put(t, "config", "cross_program/" + acct, self.cross_value(acct))
        for pid in PROGRAMS:
            self.codes[pid] = rng.sample(CODE_WORDS, rng.randint(3, 5))
            for code in self.codes[pid]:
                if rng.random() < 0.9:
                    self.put_promo(t, pid, code)

    def config_change(self, t):
        rng = self.rng
        r = rng.random()
        pid = rng.choice(list(PROGRAMS))
        if r < 0.3:
            self.put_contract(t, pid, rng.choice(PARTNERS))
        elif r < 0.38:
            partner = rng.choice(PARTNERS)
            self.contracts.pop((pid, partner), None)
            self.put(t, "config", "contract/%s/%s" % (pid, partner), None)
        elif r < 0.5:
            over = {}
            if rng.random() < 0.5:
                over["credit_policy"] = rng.choice(["last_click", "first_click", "linear", "position_based",
                                                    "time_decay", None])
            if rng.random() < 0.4:
                over["referral_window_days"] = rng.choice([7, 14, 30, 45, None])
            if rng.random() < 0.3:
                over["locking_days"] = rng.choice([5, 10, 30, 45, None])
            if rng.random() < 0.3:
                over["min_click_to_conversion_secs"] = rng.choice([0, 60, 600, None])
            if rng.random() < 0.2:
                over["time_decay_half_life_days"] = rng.choice(["1", "3.5", 7, 0.75, None])
            if rng.random() < 0.15:
                over["currency"] = rng.choice(["USD", "JPY", None])
            self.put_program(t, pid, **over)
        elif r < 0.58:
            acct = rng.choice(list(ACCOUNT_PROGRAMS))
            self.put(t, "config", "cross_program/" + acct, self.cross_value(acct))
        elif r < 0.72:
            code = rng.choice(self.codes[pid] + ["NEW-%d" % rng.randrange(100)])
            if code not in self.codes[pid]:
                self.codes[pid].append(code)
            self.put_promo(t, pid, code)
        elif r < 0.78:
            code = rng.choice(self.codes[pid])
            self.put(t, "promo_codes", pid + "/" + code.upper(), None)
        elif r < 0.8:
            # a program briefly deleted (and its clicks still in journeys)
            if pid not in ("p1", "g1"):
                self.programs.pop(pid, None)
                self.put(t, "config", "program/" + pid, None)
                self.put_program(t + rng.randrange(HOUR, 3 * DAY), pid)
        else:
            self.bad_config(t)

    def bad_config(self, t):
        rng = self.rng
        pid = rng.choice(list(PROGRAMS))
        partner = rng.choice(PARTNERS)
        k = rng.randrange(15)
        if k == 0:
            v = self.program_value(pid, referral_window_days=-1)
            self.put(t, "config", "program/" + pid, v)
        elif k == 1:
            self.put(t, "config", "program/" + pid, self.program_value(pid, locking_days=-5))
        elif k == 2:
            self.put(t, "config", "program/" + pid, self.program_value(pid, time_decay_half_life_days="0"))
        elif k == 3:
            v = self.program_value(pid)
            del v["account_id"]
            self.put(t, "config", "program/" + pid, v)
        elif k == 4:
            self.put(t, "config", "program/" + pid, self.program_value(pid, credit_policy="u_shaped"))
        elif k == 5:
            self.put(t, "config", "program/zz" + pid, self.program_value(pid))
        elif k == 6:
            v = self.contract_value(pid, partner, t)
            v["payout"] = {"default": {"percent": "150"}}
            self.put(t, "config", "contract/%s/%s" % (pid, partner), v)
        elif k == 7:
            v = self.contract_value(pid, partner, t)
            v["payout"] = {"default": {"percent": "5", "fixed": "1"}, "groups": []}
            self.put(t, "config", "contract/%s/%s" % (pid, partner), v)
        elif k == 8:
            v = self.contract_value(pid, partner, t)
            v["payout"] = {"groups": [{"when": {"skus": ["SKU-1"]}, "rate": {"fixed": "-2"}}]}
            self.put(t, "config", "contract/%s/%s" % (pid, partner), v)
        elif k == 9:
            v = self.contract_value(pid, partner, t)
            v["active_from"] = self.ts(START + 10 * DAY)
            v["active_to"] = self.ts(START + 5 * DAY)
            self.put(t, "config", "contract/%s/%s" % (pid, partner), v)
        elif k == 10:
            v = self.contract_value(pid, partner, t)
            v["credit_group"] = rng.choice(["gold", "PREFERRED"])
            self.put(t, "config", "contract/%s/%s" % (pid, partner), v)
        elif k == 11:
            v = self.contract_value(pid, partner, t)
            self.put(t, "config", "contract/%s/%s" % (pid, rng.choice(PARTNERS) + "x"), v)
        elif k == 12:
            acct = rng.choice(list(ACCOUNT_PROGRAMS))
            other = [p for a, ps in ACCOUNT_PROGRAMS.items() if a != acct for p in ps]
            v = {"type": "cross_program", "account_id": acct, "enabled": True, "scope": "specific",
                 "programs": [ACCOUNT_PROGRAMS[acct][0], rng.choice(other)]}
            self.put(t, "config", "cross_program/" + acct, v)
        elif k == 13:
            code = rng.choice(self.codes[pid])
            v = self.promo_value(pid, code, t)
            r = rng.random()
            if r < 0.3:
                v["credit_policy"] = "sometimes"
            elif r < 0.6:
                v["valid_from"], v["valid_to"] = self.ts(START + 9 * DAY), self.ts(START + 2 * DAY)
            elif r < 0.8:
                del v["partner_id"]
            self.put(t, "promo_codes", (pid + "/" + code.upper()) if r < 0.8 else (pid + "/OTHER"), v)
        else:
            v = {"type": "contract", "program_id": pid, "partner_id": partner, "active_from": self.ts(t),
                 "referral_window_days": -2}
            self.put(t, "config", "contract/%s/%s" % (pid, partner), v)

    # ---------------------------------------------------------------- journeys
    def pick_identity(self):
        rng = self.rng
        r = rng.random()
        if r < 0.55 and self.devices:
            dev = rng.choice(self.devices[-400:]) if rng.random() < 0.7 else rng.choice(self.devices)
        else:
            dev = "d-%05d" % len(self.devices)
            self.devices.append(dev)
        cust = None
        if rng.random() < 0.4:
            cust = "cu-%04d" % rng.randrange(max(1, len(self.devices) // 2))
        if rng.random() < 0.07:
            return None, cust or "cu-x%04d" % rng.randrange(3000)   # customer-keyed journey
        return dev, cust

    def key_for(self, dev, cust):
        """(kafka key, device_id field, customer_id field)"""
        r = self.rng.random()
        if dev is None:
            if r < 0.3:
                return None, None, cust   # derived from customer_id
            return cust, None, cust
        if r < 0.08:
            return None, dev, cust        # derived from device_id
        return dev, dev, cust

    def emit_time(self, t, kind):
        rng = self.rng
        r = rng.random()
        if kind == "click" and r < 0.02:
            return t - rng.randrange(1, 10 * MIN)       # early
        if r < 0.03:
            return t + rng.randrange(1, 3 * HOUR)       # late
        return t

    def click(self, t, ident, pid, partner, cid=None, bare=False):
        rng = self.rng
        dev, cust = ident
        if bare:
            key, d, c = dev, None, None   # neither id: the key names the device (§6)
        else:
            key, d, c = self.key_for(dev, cust)
        if cid is None:
            self.click_no += 1
            cid = "c-%06d" % self.click_no
        v = {"type": "click", "click_id": cid, "program_id": pid, "partner_id": partner,
             "occurred_at": self.ts(t)}
        if rng.random() < 0.1:
            del v["type"]
        if d is not None or rng.random() < 0.2:
            v["device_id"] = d
        if c is not None:
            v["customer_id"] = c
        if rng.random() < 0.3:
            v["media_id"] = "m-%d" % rng.randrange(50)
        if rng.random() < 0.3:
            v["shared_id"] = rng.choice(["spring-post", "yt-123", "x" * 255, "ünï-çødé"])
        r = rng.random()
        if r < 0.3:
            v["sub_ids"] = rng.sample(["a", "b", "c", "d"], rng.randint(0, 3))
        elif r < 0.35:
            v["sub_ids"] = None
        if rng.random() < 0.7:
            v["source"] = rng.choice(SOURCES)
        if rng.random() < 0.2:
            v["landing_url"] = "https://shop.example/?irclickid=" + cid
        if rng.random() < 0.05:
            v["unknown_field"] = {"nested": [1, 2.50, "x"]}
        self.put(self.emit_time(t, "click"), "clicks", key, v)
        return cid

    def items(self):
        rng = self.rng
        r = rng.random()
        if r < 0.12:
            return None
        if r < 0.17:
            return []
        out = []
        for sku in rng.sample(SKUS, rng.randint(1, 4)):
            it = {}
            if rng.random() < 0.93:
                it["sku"] = sku
            cat = rng.choice(CATEGORIES)
            if cat is not None:
                it["category"] = cat
            q = rng.choice([1, 1, 1, 2, 3, 0, 5])
            if rng.random() < 0.9:
                it["quantity"] = q if rng.random() < 0.7 else rng.choice([str(q), "%d.0" % q])
            if rng.random() < 0.95:
                it["unit_price"] = self.money(rng.choice([999, 1999, 2500, 4999, 100, 0, 12345, 333,
                                                          rng.randrange(1, 30000)]))
            out.append(it)
        return out

    def conversion(self, t, ident, pid, et, oid, bare=False):
        rng = self.rng
        dev, cust = ident
        if bare:
            key, d, c = dev, None, None   # neither id: the key names the device (§6)
        else:
            key, d, c = self.key_for(dev, cust)
        v = {"type": "conversion", "program_id": pid, "event_type": et, "order_id": oid,
             "occurred_at": self.ts(t)}
        if rng.random() < 0.1:
            del v["type"]
        if d is not None:
            v["device_id"] = d
        if c is not None:
            v["customer_id"] = c
        # (A conversion before any click names no click id: there is none to name.)
        if self.click_no and rng.random() < 0.1:
            v["click_id"] = "c-%06d" % rng.randrange(1, self.click_no + 1)
        r = rng.random()
        if r < 0.25:
            codes = self.codes.get(pid) or CODE_WORDS
            v["promo_code"] = case_mix(rng, rng.choice(codes))
        elif r < 0.3:
            v["promo_code"] = rng.choice(["NOPE", "save11", "bf2025"])
        r = rng.random()
        if r < 0.7:
            v["customer_status"] = rng.choice(["new", "returning", "unknown"])
        elif r < 0.75:
            v["customer_status"] = None
        r = rng.random()
        if r < 0.4:
            v["currency"] = rng.choice(["USD", "EUR", "GBP"])
        items = self.items() if et == "sale" or rng.random() < 0.2 else None
        if items is not None or rng.random() < 0.5:
            v["items"] = items
        if not items:
            r = rng.random()
            if r < 0.6:
                v["order_subtotal"] = self.money(rng.choice([0, 1500, 9900, rng.randrange(1, 50000)]))
            total = 0 if "order_subtotal" not in v else None
        else:
            total = None
        # discount: up to the item total (computed from what was written)
        if rng.random() < 0.35:
            tot = self.item_total(v)
            if tot > 0:
                r = rng.random()
                disc = tot if r < 0.1 else rng.randrange(0, tot + 1) if r < 0.5 else min(tot, rng.choice([500, 1000]))
                v["order_discount"] = self.money(disc)
            elif rng.random() < 0.5:
                v["order_discount"] = "0"
        if rng.random() < 0.4:
            v["order_tax"] = self.money(rng.randrange(0, 3000))
        if rng.random() < 0.3:
            v["order_shipping"] = self.money(rng.choice([0, 499, 999]))
        r = rng.random()
        if r < 0.05:
            v["test"] = True
        elif r < 0.4:
            v["test"] = rng.choice([False, None])
        self.put(self.emit_time(t, "conversion"), "conversions", key, v)
        return key, v

    @staticmethod
    def cents(x):
        if x is None:
            return 0
        s = str(x)
        if "." in s:
            a, b = s.split(".")
            b = (b + "00")[:2]
            return int(a) * 100 + int(b)
        return int(s) * 100

    def item_total(self, v):
        items = v.get("items")
        if not items:
            return self.cents(v.get("order_subtotal"))
        tot = 0
        for it in items:
            q = it.get("quantity", 1)
            q = int(float(q))
            tot += q * self.cents(it.get("unit_price"))
        return tot

    def change(self, t, key, conv, typ, unknown=False, ctx=None):
        rng = self.rng
        v = {"type": typ, "program_id": conv["program_id"], "event_type": conv["event_type"],
             "order_id": conv["order_id"] if not unknown else "o-missing-%d" % rng.randrange(10 ** 6),
             "occurred_at": self.ts(t)}
        if self.stitching:
            k = self.change_ids(v, key, conv, ctx)
        else:
            k = key
            if k is None or rng.random() < 0.05:
                # key derived from the payload
                k = None
                if conv.get("device_id") is not None:
                    v["device_id"] = conv["device_id"]
                else:
                    v["customer_id"] = conv.get("customer_id")
        if unknown and rng.random() < 0.3:
            v["event_type"] = "other"
        if typ == "modification":
            items = conv.get("items") or []
            skus = [it["sku"] for it in items if it.get("sku")]
            mods = []
            for sku in rng.sample(skus, min(len(skus), rng.randint(0, 2))):
                mods.append({"sku": sku, "quantity": rng.choice([0, 1, 2, 4])})
            if rng.random() < 0.25:
                mods.append({"sku": "SKU-404", "quantity": 3})
            if mods or rng.random() < 0.3:
                v["items"] = mods
            if not items and rng.random() < 0.7:
                v["order_subtotal"] = self.money(rng.randrange(0, 40000))
            if rng.random() < 0.5:
                v["reason"] = "item_returned"
        elif rng.random() < 0.5:
            v["reason"] = rng.choice(["cons_fraud", "returned", "test"])
        self.put(self.emit_time(t, "change"), "conversions", k, v)

    def locking_days(self, pid):
        p = self.programs.get(pid) or {}
        ld = p.get("locking_days")
        return 45 if ld is None else ld

    def click_plan(self, t_conv, pid, account, members, prev):
        """(program, partner, time) of one click of a session converting at t_conv."""
        rng = self.rng
        r = rng.random()
        cp = pid
        if r < 0.15:
            cp = rng.choice(ACCOUNT_PROGRAMS.get(account, ["p1"]))
        elif r < 0.2:
            cp = rng.choice(list(PROGRAMS))
        partner = rng.choice(members) if rng.random() < 0.8 else rng.choice(PARTNERS)
        r = rng.random()
        if r < 0.5:
            ct = t_conv - rng.randrange(0, 3 * DAY)
        elif r < 0.8:
            ct = t_conv - rng.randrange(0, 20 * DAY)
        elif r < 0.88:
            ct = t_conv - rng.randrange(0, 70 * DAY)
        elif r < 0.93:
            ct = t_conv - rng.randrange(0, 900) * 1000          # close to the conversion
        elif r < 0.96:
            ct = t_conv - self.window(pid, partner) * DAY - rng.choice([0, 0, 1, -1])  # window edge
        elif r < 0.98 and prev is not None:
            ct = prev                                               # tie in time
        else:
            ct = t_conv + rng.randrange(0, 2 * HOUR)              # after the conversion
        if rng.random() < 0.3:
            ct -= ct % 1000
        return cp, partner, ct

    def session(self, t_conv):
        rng = self.rng
        ident = self.pick_identity()
        r = rng.random()
        pid = rng.choice(["p1", "p1", "p2", "p3", "pc", "g1", "g1", "g2", "g3"])
        if r < 0.012:
            pid = "p-unknown"
        account = (PROGRAMS.get(pid) or {}).get("account_id", "acme")
        members = [pa for (p, pa) in self.contracts if p == pid] or PARTNERS
        # clicks
        nclicks = rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 7])
        if rng.random() < 0.003:
            nclicks = rng.randint(45, 70)   # a long journey: touchpoints are capped at 50
        cids = []
        prev = None
        for _ in range(nclicks):
            cp, partner, ct = self.click_plan(t_conv, pid, account, members, prev)
            cid = self.click(ct, ident, cp, partner)
            cids.append((ct, cid, cp))
            prev = ct
            if rng.random() < 0.03:
                # the same click id again, maybe with other values: ignored
                other = rng.choice(PARTNERS)
                self.click(ct + rng.randrange(0, HOUR), ident, cp, other, cid=cid)
        if rng.random() < 0.1:
            return   # browsing only
        et = rng.choice(EVENT_TYPES)
        self.order_no += 1
        oid = "o-%06d" % self.order_no
        if rng.random() < 0.002 and self.order_no > 10:
            oid = "o-%06d" % rng.randrange(1, self.order_no)   # same order id under another key
        key, conv = self.conversion(t_conv, ident, pid, et, oid)
        # late clicks that must not change the conversion
        if rng.random() < 0.05:
            self.click(t_conv - rng.randrange(0, DAY), ident, pid, rng.choice(members))
        # duplicates
        if rng.random() < 0.04:
            key2, conv2 = self.conversion(t_conv + rng.randrange(0, 3 * DAY), ident, pid, et, oid)
        self.changes(t_conv, pid, key, conv)

    def changes(self, t_conv, pid, key, conv, ctx=None):
        """Modifications and reversals (sometimes late, sometimes of unknown orders) of conv."""
        rng = self.rng
        lock = t_conv + self.locking_days(pid) * DAY
        r = rng.random()
        if r < 0.14:
            n = rng.choice([1, 1, 2, 3])
            t = t_conv
            for _ in range(n):
                t += rng.randrange(MIN, 5 * DAY)
                self.change(t, key, conv, "modification", ctx=ctx)
            if rng.random() < 0.3:
                self.change(t + rng.randrange(MIN, 2 * DAY), key, conv, "reversal", ctx=ctx)
        elif r < 0.22:
            t = t_conv + rng.randrange(MIN, 8 * DAY)
            self.change(t, key, conv, "reversal", ctx=ctx)
            if rng.random() < 0.4:
                self.change(t + rng.randrange(MIN, 2 * DAY), key, conv,
                            rng.choice(["reversal", "modification"]), ctx=ctx)
            if rng.random() < 0.15:
                self.change(lock + rng.randrange(0, 12 * HOUR), key, conv, "reversal", ctx=ctx)
        elif r < 0.26:
            # late changes around locking
            t = lock + rng.choice([0, 0, 1, -1, rng.randrange(0, 12 * HOUR)])
            self.change(t, key, conv, rng.choice(["reversal", "modification"]), ctx=ctx)
        elif r < 0.29:
            self.change(t_conv + rng.randrange(MIN, 3 * DAY), key, conv,
                        rng.choice(["reversal", "modification"]), unknown=True, ctx=ctx)

    # ---------------------------------------------------------------- §6 cross-device streams
    def new_device(self):
        dev = "d-%05d" % len(self.devices)
        self.devices.append(dev)
        return dev

    def new_person(self):
        rng = self.rng
        cid = "cu-%05d" % len(self.people)
        if self.anon and rng.random() < 0.01:
            cid = rng.choice(self.anon)   # a customer id spelled like a device id: still another journey
        p = {"id": cid, "devices": [self.new_device() for _ in range(rng.choice([2, 2, 3]))]}
        self.people.append(p)
        return p

    def pick_person(self):
        """A customer (dict) or, for a device that never logs in, None and the device."""
        rng = self.rng
        if rng.random() < 0.18:
            if self.anon and rng.random() < 0.6:
                return None, rng.choice(self.anon[-300:])
            dev = self.new_device()
            self.anon.append(dev)
            return None, dev
        if not self.people or rng.random() < 0.3:
            return self.new_person(), None
        if rng.random() < 0.7:
            return rng.choice(self.people[-300:]), None
        return rng.choice(self.people), None

    def other_device(self, person):
        """A device of another customer, preferably one already linked (a conflict)."""
        rng = self.rng
        for _ in range(4):
            q = rng.choice(self.people)
            if q is not person:
                d = rng.choice(q["devices"])
                if d in self.linked or rng.random() < 0.3:
                    return d
        return self.new_device()

    def unlinked_device(self, person):
        """A device of the customer not linked yet (as far as the generator knows)."""
        free = [d for d in person["devices"] if d not in self.linked]
        if free:
            return self.rng.choice(free)
        dev = self.new_device()
        person["devices"].append(dev)
        return dev

    def note(self, ident, cid=None, t=None):
        dev, cust = ident
        if dev is not None and cust is not None:
            self.linked.setdefault(dev, cust)
        if cid is not None and cust is not None:
            lst = self.logged_clicks.setdefault(cust, [])
            lst.append((cid, t))
            del lst[:-20]

    def recent_logged_click(self, cust, t):
        """A click id of the customer's from the last week, or None. Older ones are not
        reused: an implementation with retention may have forgotten them (the reference
        keeps every click)."""
        recent = [c for (c, tc) in self.logged_clicks.get(cust, []) if abs(t - tc) < 7 * DAY]
        return self.rng.choice(recent) if recent else None

    def identify(self, t, dev, cust, key=Ellipsis):
        rng = self.rng
        v = {"type": "identify", "device_id": dev, "customer_id": cust, "occurred_at": self.ts(t)}
        if rng.random() < 0.1:
            del v["type"]
        if rng.random() < 0.05:
            v["source"] = "login"   # an unknown field
        if key is Ellipsis:
            key = dev if rng.random() < 0.92 else None
        self.put(self.emit_time(t, "identify"), "identities", key, v)
        self.linked.setdefault(dev, cust)

    def sclick(self, t, ident, pid, partner, cid=None, bare=False):
        cid = self.click(t, ident, pid, partner, cid=cid, bare=bare)
        self.note(ident, cid, t)
        return cid

    def sconversion(self, t, ident, pid, et, oid, bare=False):
        key, v = self.conversion(t, ident, pid, et, oid, bare=bare)
        self.note(ident)
        return key, v

    def change_ids(self, v, key, conv, ctx):
        """§6: a change carries device_id (and is keyed by it) or customer_id, or both."""
        rng = self.rng
        cust, devs = ctx if ctx is not None else (None, [])
        d, c = conv.get("device_id"), conv.get("customer_id")
        if d is None and c is None:
            d = key                      # a conversion without ids: the device of its key
        c = c or cust
        r = rng.random()
        if d is not None and (r < 0.5 or c is None):
            v["device_id"] = d
            k = d
        elif r < 0.7:
            v["customer_id"] = c
            k = rng.choice([c, c, None, d])   # any key: only a device_id binds it
        elif r < 0.82 and d is not None:
            v["device_id"], v["customer_id"] = d, c
            k = d
        elif devs:
            dd = rng.choice(devs)        # another device of the customer
            v["device_id"] = dd
            k = dd
        else:
            v["customer_id"] = c
            k = c
        if "device_id" in v and rng.random() < 0.05:
            k = None                     # a null key takes the device_id
        return k

    def xsession(self, t_conv):
        """A session of a customer over their devices, or of a device that never logs in."""
        rng = self.rng
        person, adev = self.pick_person()
        if person is None:
            cust, devs = None, [adev]
        else:
            cust, devs = person["id"], person["devices"]
        pid = rng.choice(["p1", "p1", "p2", "p3", "pc", "g1", "g1", "g2", "g3"])
        if rng.random() < 0.012:
            pid = "p-unknown"
        account = (PROGRAMS.get(pid) or {}).get("account_id", "acme")
        members = [pa for (p, pa) in self.contracts if p == pid] or PARTNERS
        conv_dev = rng.choice(devs)
        login = rng.choice([0, 0.05, 0.15, 0.4]) if cust else 0
        borrowed = self.other_device(person) if cust and rng.random() < 0.025 else None

        def ident_for(dev):
            if cust is None:
                return dev, None
            r = rng.random()
            if r < login:
                return dev, cust                 # logged in: links dev
            if r < login + 0.04:
                return None, cust                # no device known (api, server side)
            return dev, None

        nclicks = rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 7])
        if rng.random() < 0.003:
            nclicks = rng.randint(45, 70)
        prev, prev_dev = None, None
        for _ in range(nclicks):
            cp, partner, ct = self.click_plan(t_conv, pid, account, members, prev)
            dev = conv_dev if rng.random() < 0.45 else rng.choice(devs)
            if prev is not None and len(devs) > 1 and rng.random() < 0.06:
                ct = prev                          # equal times on two devices
                dev = rng.choice([d for d in devs if d != prev_dev] or devs)
            ident = ident_for(dev)
            cid = None
            if cust and ident[1] is None and rng.random() < 0.02:
                cid = self.recent_logged_click(cust, ct)   # the same click id seen on another device
            if borrowed is not None and rng.random() < 0.3:
                ident = (borrowed, cust)           # a device of someone else: a conflict
            self.sclick(ct, ident, cp, partner, cid=cid, bare=ident[0] is not None and rng.random() < 0.02)
            prev, prev_dev = ct, dev
        if cust and rng.random() < 0.3:
            dev = rng.choice(devs)
            r = rng.random()
            ti = t_conv - rng.randrange(0, 3 * DAY) if r < 0.7 else t_conv + rng.randrange(0, DAY)
            self.identify(ti, dev, cust)
        if cust and rng.random() < 0.01:
            self.identify(t_conv - rng.randrange(0, DAY), self.other_device(person), cust)
        if rng.random() < 0.1:
            return   # browsing only
        et = rng.choice(EVENT_TYPES)
        self.order_no += 1
        oid = "o-%06d" % self.order_no
        if rng.random() < 0.002 and self.order_no > 10:
            oid = "o-%06d" % rng.randrange(1, self.order_no)
        r = rng.random()
        if cust is None:
            ident = (conv_dev, None)
        elif borrowed is not None and r < 0.3:
            ident = (borrowed, cust)
        elif r < 0.4:
            ident = (conv_dev, cust)                   # login at checkout: links conv_dev
        elif r < 0.47:
            ident = (None, cust)                       # server-side conversion
        else:
            ident = (conv_dev, None)
        bare = ident[0] is not None and ident[1] is None and rng.random() < 0.02
        key, conv = self.sconversion(t_conv, ident, pid, et, oid, bare=bare)
        if rng.random() < 0.05:
            self.sclick(t_conv - rng.randrange(0, DAY), ident_for(rng.choice(devs)), pid, rng.choice(members))
        if rng.random() < 0.04:
            self.sconversion(t_conv + rng.randrange(0, 3 * DAY), ident_for(rng.choice(devs)), pid, et, oid)
        self.changes(t_conv, pid, key, conv, ctx=(cust, devs))

    def scenario(self, t):
        """Hand-shaped cross-device stories that hit the rules of a move."""
        rng = self.rng
        person = rng.choice(self.people[-300:]) if self.people and rng.random() < 0.6 else self.new_person()
        cust = person["id"]
        fresh = self.unlinked_device(person)
        known = [d for d in person["devices"] if d != fresh]
        linkdev = rng.choice(known) if known else self.new_device()
        pid = rng.choice(["p1", "p1", "p2", "g1", "g2"])
        members = [pa for (p, pa) in self.contracts if p == pid] or PARTNERS
        pa, pb = rng.choice(members), rng.choice(members)
        k = rng.randrange(5)
        et = "sale"
        self.order_no += 1
        oid = "o-%06d" % self.order_no
        if k == 0:
            # click-id collision: a logged-in click, then the same click id on an anonymous device
            t1 = t - rng.randrange(HOUR, 5 * DAY)
            cid = self.sclick(t1, (linkdev, cust), pid, pa)
            self.sclick(t1 + rng.randrange(0, 2 * HOUR), (fresh, None), pid, pb, cid=cid)
            self.sclick(t1 + rng.randrange(0, 2 * HOUR), (fresh, None), pid, rng.choice(members))
            self.identify(t - rng.randrange(MIN, HOUR), fresh, cust)
            key, conv = self.sconversion(t, (rng.choice([linkdev, fresh]), rng.choice([cust, None])), pid, et, oid)
        elif k == 1:
            # order collision: an anonymous conversion and a server-side one of the same order
            self.sclick(t - rng.randrange(HOUR, 3 * DAY), (fresh, None), pid, pa)
            self.sclick(t - rng.randrange(HOUR, 3 * DAY), (None, cust), pid, pb)
            key, conv = self.sconversion(t, (fresh, None), pid, et, oid)
            self.sconversion(t + rng.randrange(0, 10 * MIN), (None, cust), pid, et, oid)
            self.identify(t + rng.randrange(MIN, DAY), fresh, cust)
            if rng.random() < 0.5:
                self.sconversion(t + rng.randrange(DAY, 2 * DAY), (fresh, None), pid, et, oid)  # duplicate
        elif k == 2:
            # equal occurred_at on two devices; the anonymous one moves later and counts as later
            tt = t - rng.randrange(HOUR, 5 * DAY)
            tt -= tt % 1000
            self.sclick(tt, (fresh, None), pid, pa)
            self.sclick(tt, (linkdev, cust), pid, pb)
            self.identify(tt + rng.randrange(MIN, HOUR), fresh, cust)
            key, conv = self.sconversion(t, (linkdev, cust), pid, et, oid)
        elif k == 3:
            # conflict: a device of another customer named with this one
            od = self.other_device(person)
            r = rng.random()
            if r < 0.4:
                self.identify(t - rng.randrange(HOUR, DAY), od, cust)
            elif r < 0.7:
                self.sclick(t - rng.randrange(HOUR, DAY), (od, cust), pid, pa)
            self.sclick(t - rng.randrange(MIN, HOUR), (od, None), pid, pb)
            key, conv = self.sconversion(t, (od, cust if rng.random() < 0.5 else None), pid, et, oid)
        else:
            # login at a conversion moves the device's anonymous clicks and orders
            t0 = t - rng.randrange(DAY, 5 * DAY)
            self.sclick(t0 - rng.randrange(0, DAY), (fresh, None), pid, pa)
            self.sconversion(t0, (fresh, None), pid, et, "o-%06d" % self.order_no)
            self.order_no += 1
            oid = "o-%06d" % self.order_no
            self.sclick(t - rng.randrange(0, DAY), (linkdev, cust), pid, pb)
            key, conv = self.sconversion(t, (fresh, cust), pid, et, oid)
            # a change of the moved order, found through the customer or the device
            tc = t + rng.randrange(MIN, DAY)
            v = {"type": rng.choice(["reversal", "modification"]), "program_id": pid, "event_type": et,
                 "order_id": "o-%06d" % (self.order_no - 1), "occurred_at": self.ts(tc)}
            if rng.random() < 0.5:
                v["customer_id"] = cust
                k2 = rng.choice([cust, None])
            else:
                v["device_id"] = rng.choice([fresh, linkdev])
                k2 = v["device_id"]
            self.put(tc, "conversions", k2, v)
        self.changes(t, pid, key, conv, ctx=(cust, person["devices"]))

    def bad_stitch(self, t):
        """Records that break §6's rules: each goes to the DLQ."""
        rng = self.rng
        person = rng.choice(self.people) if self.people else self.new_person()
        cust = person["id"]
        dev = rng.choice(person["devices"])
        other = rng.choice(self.devices)
        if other == dev:
            other = self.new_device()
        base = {"program_id": "p1", "event_type": "sale", "order_id": "o-%06d" % rng.randrange(1, self.order_no + 2),
                "occurred_at": self.ts(t)}
        k = rng.randrange(10)
        if k == 0:
            v = {"type": "click", "click_id": "c-bad-%d" % rng.randrange(10 ** 6), "program_id": "p1",
                 "partner_id": rng.choice(PARTNERS), "occurred_at": self.ts(t), "device_id": dev}
            if rng.random() < 0.5:
                v["customer_id"] = cust
            self.put(t, "clicks", rng.choice([cust, other]), v)          # key is not the device
        elif k == 1:
            v = dict(base, type="conversion", device_id=dev,
                     items=[{"sku": "SKU-1", "quantity": 1, "unit_price": "10.00"}])
            if rng.random() < 0.5:
                v["customer_id"] = cust
            self.put(t, "conversions", rng.choice([cust, other]), v)     # key is not the device
        elif k == 2:
            v = dict(base, type=rng.choice(["modification", "reversal"]))
            self.put(t, "conversions", rng.choice([dev, cust]), v)       # neither device_id nor customer_id
        elif k == 3:
            v = dict(base, type=rng.choice(["modification", "reversal"]), device_id=dev)
            if rng.random() < 0.5:
                v["customer_id"] = cust
            self.put(t, "conversions", rng.choice([cust, other]), v)     # key is not the device
        elif k == 4:
            self.put(t, "identities", dev, None)                           # tombstone
        elif k == 5:
            v = {"type": "identify", "device_id": dev, "customer_id": cust, "occurred_at": self.ts(t)}
            del v[rng.choice(["device_id", "customer_id", "occurred_at"])]
            self.put(t, "identities", dev if "device_id" in v or rng.random() < 0.5 else None, v)
        elif k == 6:
            v = {"type": "identify", "device_id": dev, "customer_id": cust, "occurred_at": self.ts(t)}
            self.put(t, "identities", rng.choice([cust, other]), v)      # key is not the device
        elif k == 7:
            v = {"type": "identify", "device_id": dev, "customer_id": cust, "occurred_at": self.ts(t)}
            r = rng.random()
            if r < 0.3:
                v["type"] = rng.choice(["click", "login"])
            elif r < 0.6:
                v["occurred_at"] = rng.choice(["yesterday", "2026-05-01T10:00:00"])
            else:
                v[rng.choice(["customer_id", "device_id"])] = rng.choice([7, ["x"], True])
            self.put(t, "identities", dev if isinstance(v["device_id"], str) else None, v)
        elif k == 8:
            self.put(t, "identities", dev, rng.choice(["login", 12, ["x"]]))  # value not an object
        else:
            v = {"type": "click", "click_id": "c-bad-%d" % rng.randrange(10 ** 6), "program_id": "p1",
                 "partner_id": rng.choice(PARTNERS), "occurred_at": self.ts(t)}
            self.put(t, "clicks", None, v)                                 # no ids, no key

    # ---------------------------------------------------------------- malformed records
    def malformed(self, t):
        rng = self.rng
        k = rng.randrange(22)
        dev = "d-%05d" % rng.randrange(max(1, len(self.devices)))
        good_click = {"type": "click", "click_id": "c-bad-%d" % rng.randrange(10 ** 6), "program_id": "p1",
                      "partner_id": rng.choice(PARTNERS), "occurred_at": self.ts(t), "device_id": dev}
        good_conv = {"type": "conversion", "program_id": "p1", "event_type": "sale",
                     "order_id": "o-bad-%d" % rng.randrange(10 ** 6), "occurred_at": self.ts(t), "device_id": dev,
                     "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": "10.00"}]}
        if k == 0:
            self.put(t, "clicks", dev, None)
        elif k == 1:
            del good_click[rng.choice(["click_id", "program_id", "partner_id", "occurred_at"])]
            self.put(t, "clicks", dev, good_click)
        elif k == 2:
            good_click["occurred_at"] = rng.choice(["2026-13-01T00:00:00Z", "yesterday", "2026-05-01 10:00",
                                                    "2026-05-01T10:00:00"])
            self.put(t, "clicks", dev, good_click)
        elif k == 3:
            good_click["source"] = rng.choice(["email", "TRACKING_LINK"])
            self.put(t, "clicks", dev, good_click)
        elif k == 4:
            good_click["shared_id"] = "s" * 256
            self.put(t, "clicks", dev, good_click)
        elif k == 5:
            good_click[rng.choice(["partner_id", "click_id"])] = rng.choice([7, True, ["x"]])
            self.put(t, "clicks", dev, good_click)
        elif k == 6:
            good_click["type"] = rng.choice(["conversion", "impression"])
            self.put(t, "clicks", dev, good_click)
        elif k == 7:
            del good_click["device_id"]
            self.put(t, "clicks", None, good_click)
        elif k == 8:
            self.put(t, "conversions", dev, None)
        elif k == 9:
            del good_conv[rng.choice(["program_id", "event_type", "order_id", "occurred_at"])]
            self.put(t, "conversions", dev, good_conv)
        elif k == 10:
            good_conv["items"][0]["quantity"] = rng.choice([-1, "1.5", 0.5])
            self.put(t, "conversions", dev, good_conv)
        elif k == 11:
            good_conv["items"][0]["unit_price"] = rng.choice(["-1.00", -3])
            self.put(t, "conversions", dev, good_conv)
        elif k == 12:
            good_conv["items"].append({"sku": "SKU-1", "quantity": 2, "unit_price": "1"})
            self.put(t, "conversions", dev, good_conv)
        elif k == 13:
            good_conv["order_discount"] = rng.choice(["10.01", "11"])
            self.put(t, "conversions", dev, good_conv)
        elif k == 14:
            good_conv[rng.choice(["order_tax", "order_shipping", "order_subtotal"])] = "-0.01"
            self.put(t, "conversions", dev, good_conv)
        elif k == 15:
            good_conv["customer_status"] = rng.choice(["vip", "NEW"])
            self.put(t, "conversions", dev, good_conv)
        elif k == 16:
            good_conv["type"] = rng.choice(["click", "refund"])
            self.put(t, "conversions", dev, good_conv)
        elif k == 17:
            good_conv[rng.choice(["items", "test", "order_discount", "promo_code"])] = \
                rng.choice([{"a": 1}, "yes", "ten"])
            self.put(t, "conversions", dev, good_conv)
        elif k == 18:
            v = {"type": "modification", "program_id": "p1", "event_type": "sale", "order_id": "o-000001",
                 "occurred_at": self.ts(t),
                 "items": [rng.choice([{"quantity": 1}, {"sku": "SKU-1", "quantity": -2},
                                       {"sku": "SKU-1", "quantity": "0.5"}])]}
            self.put(t, "conversions", dev, v)
        elif k == 19:
            v = {"type": "reversal", "program_id": "p1", "event_type": "sale", "occurred_at": self.ts(t)}
            self.put(t, "conversions", dev, v)
        elif k == 20:
            self.put_raw(t, rng.choice(["not json at all", '{"topic":"clicks","key":"d-1","value":',
                                        "[1,2,3]", '{"topic":"impressions","key":"d-1","value":{}}',
                                        '"just a string"']))
        else:
            v = dict(good_conv)
            del v["device_id"]
            self.put(t, "conversions", None, v)

    # ---------------------------------------------------------------- build
    def build(self):
        rng = self.rng
        self.initial_config()
        n_sessions = max(5, int(self.n / (4.9 if self.stitching else 4.4)))
        n_changes = max(3, self.n // 700)
        n_bad = max(2, self.n // 120)
        events = []
        for _ in range(n_sessions):
            events.append((START + rng.randrange(self.span), "s"))
        for _ in range(n_changes):
            events.append((START + rng.randrange(self.span), "c"))
        for _ in range(n_bad):
            events.append((START + rng.randrange(self.span), "b"))
        if self.stitching:
            for _ in range(max(5, n_sessions // 25)):
                events.append((START + rng.randrange(self.span), "x"))
            for _ in range(max(5, self.n // 400)):
                events.append((START + rng.randrange(self.span), "y"))
        events.sort()
        for t, kind in events:
            t -= t % rng.choice([1, 1000, 60000])
            if kind == "s":
                if self.stitching:
                    self.xsession(t)
                else:
                    self.session(t)
            elif kind == "c":
                self.config_change(t)
            elif kind == "x":
                self.scenario(t)
            elif kind == "y":
                self.bad_stitch(t)
            else:
                self.malformed(t)
        self.out.sort()
        return [line for _, _, line in self.out]


def main():
    args = sys.argv[1:]
    stitching = "--stitching" in args
    args = [a for a in args if a != "--stitching"]
    if len(args) != 2 or any(a.startswith("--") for a in args):
        sys.stderr.write("usage: gen_stream.py SEED N [--stitching] > stream.jsonl\n")
        sys.exit(2)
    g = Gen(int(args[0]), int(args[1]), stitching)
    w = sys.stdout.write
    for line in g.build():
        w(line + "\n")


if __name__ == "__main__":
    main()
