#!/usr/bin/env python3
"""Hand-computed checks of attrib_ref.py.  Run: python3 selftest.py"""

import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attrib_ref  # noqa: E402

T0 = "2026-11-10T12:00:00Z"   # the usual conversion time


def run_eng(records, stitching=False):
    """records: list of dicts or raw strings; returns (parsed output lines, engine)."""
    out = io.StringIO()
    eng = attrib_ref.Engine(out, stitching)
    for i, r in enumerate(records):
        eng.line(r if isinstance(r, str) else json.dumps(r), i)
    return [json.loads(l) for l in out.getvalue().splitlines()], eng


def run(records, stitching=False):
    """records: list of dicts or raw strings; returns the parsed output lines."""
    return run_eng(records, stitching)[0]


def program(pid="p1", account="acme", **kw):
    v = {"type": "program", "program_id": pid, "account_id": account}
    v.update(kw)
    return {"topic": "config", "key": "program/" + pid, "value": v}


def contract(partner, pid="p1", pct="10", **kw):
    v = {"type": "contract", "program_id": pid, "partner_id": partner, "active_from": "2026-01-01T00:00:00Z"}
    if pct is not None:
        v["payout"] = {"default": {"percent": pct}}
    v.update(kw)
    return {"topic": "config", "key": "contract/%s/%s" % (pid, partner), "value": v}


def promo(code, partner, policy, pid="p1", **kw):
    v = {"type": "promo_code", "program_id": pid, "code": code, "partner_id": partner, "credit_policy": policy}
    v.update(kw)
    return {"topic": "promo_codes", "key": pid + "/" + code.upper(), "value": v}


def click(cid, partner, at, pid="p1", dev="d1", **kw):
    v = {"type": "click", "click_id": cid, "program_id": pid, "partner_id": partner, "occurred_at": at}
    v.update(kw)
    return {"topic": "clicks", "key": dev, "value": v}


DEFAULT_ITEMS = object()


def conv(oid, at=T0, pid="p1", dev="d1", et="sale", items=DEFAULT_ITEMS, **kw):
    v = {"type": "conversion", "program_id": pid, "event_type": et, "order_id": oid, "occurred_at": at,
         "device_id": dev}
    if items is DEFAULT_ITEMS:
        items = [{"sku": "A", "category": "shoes", "quantity": 1, "unit_price": "100.00"}]
    if items != "absent":
        v["items"] = items
    v.update(kw)
    return {"topic": "conversions", "key": dev, "value": v}


def change(typ, oid, at, pid="p1", dev="d1", et="sale", **kw):
    v = {"type": typ, "program_id": pid, "event_type": et, "order_id": oid, "occurred_at": at}
    v.update(kw)
    return {"topic": "conversions", "key": dev, "value": v}


def last(records):
    outs = run(records)
    assert outs, "no output"
    return outs[-1]


def action(records):
    o = last(records)
    assert o["topic"] == "actions", o
    return o["value"]


def reason(records):
    o = last(records)
    assert o["topic"] == "invalid_actions", o
    return o["value"]["reason"]


def credits(a):
    return [(c["partner_id"], c["weight"], c["payout"]) for c in a["credits"]]


CHECKS = []


def check(f):
    CHECKS.append(f)
    return f


# ------------------------------------------------------------------ credit policies

@check
def last_click():
    a = action([program(), contract("pa1"), contract("pa2"),
                click("c1", "pa1", "2026-11-09T10:00:00Z"),
                click("c2", "pa2", "2026-11-09T11:00:00Z"),
                conv("o1")])
    assert credits(a) == [("pa2", "1.000000", "10.000000")], a
    assert a["amount"] == "100.000000" and a["payout"] == "10.000000"
    assert a["credits"][0]["click_id"] == "c2" and a["credits"][0]["referral_type"] == "click"
    assert a["journey"]["total"] == 2 and [t["click_id"] for t in a["journey"]["touchpoints"]] == ["c1", "c2"]
    assert a["locking_at"] == "2026-12-25T12:00:00.000Z"
    assert a["currency"] is None and a["customer_status"] == "unknown"


@check
def last_click_tie_later_arrival_wins():
    a = action([program(), contract("pa1"), contract("pa2"),
                click("c2", "pa2", "2026-11-09T10:00:00Z"),
                click("c1", "pa1", "2026-11-09T10:00:00Z"),
                conv("o1")])
    assert credits(a) == [("pa1", "1.000000", "10.000000")], a


@check
def standing_click_is_nearest_not_future():
    # pa1 has a click after T (not eligible) and two before; the later of those stands.
    a = action([program(), contract("pa1"),
                click("c1", "pa1", "2026-11-01T10:00:00Z", sub_ids=["x"]),
                click("c2", "pa1", "2026-11-05T10:00:00Z", shared_id="s2"),
                click("c3", "pa1", "2026-11-11T10:00:00Z"),
                conv("o1")])
    c = a["credits"][0]
    assert c["click_id"] == "c2" and c["shared_id"] == "s2" and c["sub_ids"] == [], c
    assert c["referring_at"] == "2026-11-05T10:00:00.000Z"
    assert a["journey"]["total"] == 2


@check
def first_click():
    a = action([program(credit_policy="first_click"), contract("pa1"), contract("pa2"),
                click("c1", "pa1", "2026-11-05T10:00:00Z"),
                click("c2", "pa2", "2026-11-03T10:00:00Z"),
                click("c3", "pa2", "2026-11-08T10:00:00Z"),
                conv("o1")])
    assert credits(a) == [("pa2", "1.000000", "10.000000")], a
    assert a["credits"][0]["click_id"] == "c2"


@check
def window_boundary_inclusive():
    recs = [program(), contract("pa1"), click("c1", "pa1", "2026-10-11T12:00:00Z")]
    a = action(recs + [conv("o1")])               # exactly 30 days
    assert credits(a) == [("pa1", "1.000000", "10.000000")]
    assert reason(recs + [conv("o1", at="2026-11-10T12:00:00.001Z")]) == "outside_referral_window"


@check
def contract_window_overrides_program():
    recs = [program(referral_window_days=30), contract("pa1", referral_window_days=2),
            click("c1", "pa1", "2026-11-08T11:59:59Z")]
    assert reason(recs + [conv("o1")]) == "outside_referral_window"
    recs = [program(referral_window_days=1), contract("pa1", referral_window_days=3),
            click("c1", "pa1", "2026-11-08T11:59:59Z")]
    assert action(recs + [conv("o1")])["credits"][0]["partner_id"] == "pa1"


@check
def min_click_to_conversion():
    recs = [program(min_click_to_conversion_secs=60), contract("pa1")]
    assert reason(recs + [click("c1", "pa1", "2026-11-10T11:59:00.001Z"), conv("o1")]) == "outside_referral_window"
    assert action(recs + [click("c1", "pa1", "2026-11-10T11:59:00Z"), conv("o1")])["payout"] == "10.000000"


@check
def linear_three_way():
    a = action([program(credit_policy="linear"), contract("pa1"), contract("pa2"), contract("pa3"),
                click("c1", "pa1", "2026-11-07T10:00:00Z"),
                click("c2", "pa2", "2026-11-08T10:00:00Z"),
                click("c3", "pa3", "2026-11-09T10:00:00Z"),
                conv("o1")])
    assert credits(a) == [("pa1", "0.333333", "3.333333"), ("pa2", "0.333333", "3.333333"),
                          ("pa3", "0.333334", "3.333334")], credits(a)
    assert a["payout"] == "10.000000"


@check
def linear_credits_in_time_order_of_standing_clicks():
    # pa1's latest click is the newest; credits are ordered by standing click.
    a = action([program(credit_policy="linear"), contract("pa1"), contract("pa2", pct="20"),
                click("c1", "pa1", "2026-11-07T10:00:00Z"),
                click("c2", "pa2", "2026-11-08T10:00:00Z"),
                click("c3", "pa1", "2026-11-09T10:00:00Z"),
                conv("o1")])
    # pa2 total 20, pa1 total 10: payout = 0.5*20 + 0.5*10 = 15
    assert credits(a) == [("pa2", "0.500000", "10.000000"), ("pa1", "0.500000", "5.000000")], credits(a)
    assert a["credits"][1]["click_id"] == "c3"


@check
def position_based_four_way():
    a = action([program(credit_policy="position_based"), contract("pa1"), contract("pa2"), contract("pa3"),
                contract("pa4"),
                click("c1", "pa1", "2026-11-06T10:00:00Z"),
                click("c2", "pa2", "2026-11-07T10:00:00Z"),
                click("c3", "pa3", "2026-11-08T10:00:00Z"),
                click("c4", "pa4", "2026-11-09T10:00:00Z"),
                conv("o1", items=[{"sku": "A", "quantity": 1, "unit_price": "50"}])])
    # total per contract 5
    assert credits(a) == [("pa1", "0.400000", "2.000000"), ("pa2", "0.100000", "0.500000"),
                          ("pa3", "0.100000", "0.500000"), ("pa4", "0.400000", "2.000000")], credits(a)
    assert a["payout"] == "5.000000" and a["amount"] == "50.000000"


@check
def position_based_two_and_five():
    base = [program(credit_policy="position_based"), contract("pa1"), contract("pa2"), contract("pa3"),
            contract("pa4"), contract("pa5"),
            click("c1", "pa1", "2026-11-05T10:00:00Z"),
            click("c2", "pa2", "2026-11-06T10:00:00Z")]
    a = action(base + [conv("o1")])
    assert [c[1] for c in credits(a)] == ["0.500000", "0.500000"]
    a = action(base + [click("c3", "pa3", "2026-11-07T10:00:00Z"), click("c4", "pa4", "2026-11-08T10:00:00Z"),
                       click("c5", "pa5", "2026-11-09T10:00:00Z"), conv("o1")])
    # middle three share 0.2: 0.066667, 0.066667 then the last of the five takes 1 - 0.6 - 0.000... rest
    assert [c[1] for c in credits(a)] == ["0.400000", "0.066667", "0.066667", "0.066667", "0.399999"], credits(a)
    # payouts from exact weights: 4, 0.666666.., 0.666666.., 0.666666.., 4 -> 10
    assert [c[2] for c in credits(a)] == ["4.000000", "0.666667", "0.666667", "0.666667", "3.999999"], credits(a)
    assert a["payout"] == "10.000000"


@check
def time_decay():
    a = action([program(credit_policy="time_decay", time_decay_half_life_days=7),
                contract("pa1", pct="7"), contract("pa2", pct="7"), contract("pa3", pct="7"),
                click("c1", "pa1", "2026-10-27T12:00:00Z"),   # 14 days: 1/4
                click("c2", "pa2", "2026-11-03T12:00:00Z"),   # 7 days: 1/2
                click("c3", "pa3", "2026-11-10T12:00:00Z"),   # 0 days: 1
                conv("o1")])
    # weights 1/7, 2/7, 4/7 of contract totals 7 each
    assert credits(a) == [("pa1", "0.142857", "1.000000"), ("pa2", "0.285714", "2.000000"),
                          ("pa3", "0.571429", "4.000000")], credits(a)
    assert a["payout"] == "7.000000"


@check
def time_decay_half_life_decimal():
    a = action([program(credit_policy="time_decay", time_decay_half_life_days="0.5"),
                contract("pa1"), contract("pa2"),
                click("c1", "pa1", "2026-11-09T12:00:00Z"),   # 1 day = 2 half-lives: 1/4
                click("c2", "pa2", "2026-11-10T00:00:00Z"),   # 0.5 day: 1/2
                conv("o1")])
    # weights 1/3, 2/3; totals 10 -> 3.333333, 6.666667
    assert credits(a) == [("pa1", "0.333333", "3.333333"), ("pa2", "0.666667", "6.666667")], credits(a)


# ------------------------------------------------------------------ credit groups, cross program

@check
def credit_groups():
    a = action([program(credit_policy="linear"), contract("pa1", credit_group="standard"),
                contract("pa2", credit_group="non_preferred"), contract("pa3", credit_group="standard"),
                click("c1", "pa1", "2026-11-07T10:00:00Z"),
                click("c2", "pa2", "2026-11-09T10:00:00Z"),
                click("c3", "pa3", "2026-11-08T10:00:00Z"),
                conv("o1")])
    assert [c[0] for c in credits(a)] == ["pa1", "pa3"], credits(a)


@check
def cross_program():
    base = [program("p1"), program("p2"), program("p3", kind="creator"), program("q1", account="other"),
            contract("pa1"), contract("pa2")]
    clicks = [click("x1", "pa1", "2026-11-09T10:00:00Z", pid="p2"), click("x2", "pa2", "2026-11-08T10:00:00Z")]
    # disabled: only pa2's own click
    a = action(base + [{"topic": "config", "key": "cross_program/acme",
                        "value": {"type": "cross_program", "account_id": "acme", "enabled": False}}] + clicks
               + [conv("o1")])
    assert a["credits"][0]["partner_id"] == "pa2" and a["journey"]["total"] == 1
    # all
    a = action(base + [{"topic": "config", "key": "cross_program/acme",
                        "value": {"type": "cross_program", "account_id": "acme", "enabled": True, "scope": "all"}}]
               + clicks + [conv("o1")])
    assert a["credits"][0]["partner_id"] == "pa1" and a["credits"][0]["referral_type"] == "cross_program_click"
    assert a["journey"]["total"] == 2
    # specific not listing p2
    a = action(base + [{"topic": "config", "key": "cross_program/acme",
                        "value": {"type": "cross_program", "account_id": "acme", "enabled": True,
                                  "scope": "specific", "programs": ["p1", "p3"]}}] + clicks + [conv("o1")])
    assert a["credits"][0]["partner_id"] == "pa2"
    # creator program's clicks do not cross; other account's never
    xall = {"topic": "config", "key": "cross_program/acme",
            "value": {"type": "cross_program", "account_id": "acme", "enabled": True}}
    assert reason(base + [xall, click("x1", "pa1", "2026-11-09T10:00:00Z", pid="p3"), conv("o1")]) \
        == "no_valid_referrer"
    assert reason(base + [xall, click("x1", "pa1", "2026-11-09T10:00:00Z", pid="q1"), conv("o1")]) \
        == "no_valid_referrer"
    # the creator program's own clicks count for it
    a = action(base + [xall, contract("pa1", pid="p3"), click("x1", "pa1", "2026-11-09T10:00:00Z", pid="p3"),
                       click("x2", "pa2", "2026-11-09T11:00:00Z", pid="p1"), conv("o1", pid="p3")])
    assert a["credits"][0]["click_id"] == "x1" and a["journey"]["total"] == 1
    # a cross_program naming a program of another account goes to the DLQ
    o = last(base + [{"topic": "config", "key": "cross_program/acme",
                      "value": {"type": "cross_program", "account_id": "acme", "enabled": True,
                                "scope": "specific", "programs": ["p1", "q1"]}}])
    assert o["topic"] == "dlq"


# ------------------------------------------------------------------ promo codes

@check
def promo_always():
    base = [program(), contract("pa1"), contract("pa2", pct="20"), promo("SAVE", "pa2", "always"),
            click("c1", "pa1", "2026-11-09T10:00:00Z")]
    a = action(base + [conv("o1", promo_code="save")])
    assert credits(a) == [("pa2", "1.000000", "20.000000")]
    c = a["credits"][0]
    assert (c["referral_type"], c["click_id"], c["promo_code"], c["sub_ids"], c["referring_at"]) == \
        ("promo_code", None, "save", [], "2026-11-10T12:00:00.000Z"), c
    assert a["promo_code"] == "save"
    # a higher group click beats an always code of a lower group
    base2 = [program(), contract("pa1"), contract("pa2", credit_group="standard"), promo("SAVE", "pa2", "always"),
             click("c1", "pa1", "2026-11-09T10:00:00Z")]
    a = action(base2 + [conv("o1", promo_code="Save")])
    assert credits(a) == [("pa1", "1.000000", "10.000000")] and a["credits"][0]["promo_code"] is None
    # ... but a lower group click does not
    base3 = [program(), contract("pa1", credit_group="non_preferred"), contract("pa2", credit_group="standard"),
             promo("SAVE", "pa2", "always"), click("c1", "pa1", "2026-11-09T10:00:00Z")]
    assert action(base3 + [conv("o1", promo_code="SAVE")])["credits"][0]["partner_id"] == "pa2"


@check
def promo_if_involved():
    base = [program(), contract("pa1"), contract("pa2", pct="20"), promo("SAVE", "pa2", "if_involved"),
            click("c1", "pa1", "2026-11-09T10:00:00Z")]
    a = action(base + [conv("o1", promo_code="save")])
    assert credits(a) == [("pa1", "1.000000", "10.000000")]
    a = action(base[:-1] + [click("c0", "pa2", "2026-11-08T10:00:00Z")] + base[-1:] + [conv("o1", promo_code="save")])
    assert credits(a) == [("pa2", "1.000000", "20.000000")] and a["credits"][0]["referral_type"] == "promo_code"


@check
def promo_if_winner():
    base = [program(), contract("pa1"), contract("pa2", pct="20"), promo("SAVE", "pa2", "if_winner"),
            click("c1", "pa1", "2026-11-08T10:00:00Z")]
    a = action(base + [conv("o1", promo_code="save")])
    assert credits(a) == [("pa1", "1.000000", "10.000000")] and a["credits"][0]["promo_code"] is None
    a = action(base + [click("c2", "pa2", "2026-11-09T10:00:00Z"), conv("o1", promo_code="save")])
    c = a["credits"][0]
    assert (c["partner_id"], c["referral_type"], c["click_id"], c["promo_code"]) == ("pa2", "click", "c2", "save")
    # no clicks at all: the if_winner code does not credit
    assert reason([program(), contract("pa2"), promo("SAVE", "pa2", "if_winner"),
                   conv("o1", promo_code="save")]) == "no_valid_referrer"


@check
def promo_validity_and_partner():
    base = [program(), contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z")]
    # valid_to exclusive: the code does not credit but the click does; reported as spelled
    a = action(base + [contract("pa2"), promo("SAVE", "pa2", "always", valid_to=T0), conv("o1", promo_code="sAvE")])
    assert a["credits"][0]["partner_id"] == "pa1" and a["promo_code"] == "sAvE"
    a = action(base + [contract("pa2"), promo("SAVE", "pa2", "always", valid_from=T0), conv("o1", promo_code="save")])
    assert a["credits"][0]["partner_id"] == "pa2"
    assert reason([program(), contract("pa2"), promo("SAVE", "pa2", "always", valid_to=T0),
                   conv("o1", promo_code="save")]) == "promo_code_not_assigned"
    assert reason([program(), conv("o1", promo_code="nope")]) == "promo_code_not_assigned"
    # assigned, partner contract does not cover the event type -> partner_not_active
    assert reason([program(), contract("pa2", event_types=["lead"]), promo("SAVE", "pa2", "always"),
                   contract("pa1"), click("c1", "pa1", "2026-09-01T10:00:00Z"),
                   conv("o1", promo_code="save")]) == "partner_not_active"
    # promo revoked by a tombstone
    assert reason([program(), contract("pa2"), promo("SAVE", "pa2", "always"),
                   {"topic": "promo_codes", "key": "p1/SAVE", "value": None},
                   conv("o1", promo_code="save")]) == "promo_code_not_assigned"


# ------------------------------------------------------------------ payouts, modifications, reversals

PAY = {"default": {"percent": "10"},
       "groups": [{"when": {"customer_status": "new", "categories": ["shoes"]}, "rate": {"fixed": "5.00"}}]}
ITEMS = [{"sku": "A", "category": "shoes", "quantity": 2, "unit_price": "30.00"},
         {"sku": "B", "category": "hats", "quantity": 1, "unit_price": 40}]


def pay_base():
    return [program(currency="EUR"), contract("pa1", pct=None, payout=PAY),
            click("c1", "pa1", "2026-11-09T10:00:00Z"),
            conv("o1", items=ITEMS, order_discount="10", order_tax="3", order_shipping="4", customer_status="new")]


@check
def payout_discount_fixed_group():
    a = action(pay_base())
    # A: 60 - 6 = 54 (fixed group 5), B: 40 - 4 = 36 (10% = 3.6)
    assert (a["amount"], a["payout"], a["currency"], a["customer_status"]) == \
        ("90.000000", "8.600000", "EUR", "new"), a
    # returning customer: no group; 10% of 90 = 9
    recs = pay_base()
    recs[-1]["value"]["customer_status"] = "returning"
    assert action(recs)["payout"] == "9.000000"
    # two items in the fixed group pay it once
    recs = pay_base()
    recs[-1]["value"]["items"] = [{"sku": "A", "category": "shoes", "quantity": 1, "unit_price": "10"},
                                  {"sku": "C", "category": "shoes", "quantity": 3, "unit_price": "10"}]
    recs[-1]["value"]["currency"] = "USD"
    a = action(recs)
    assert (a["amount"], a["payout"], a["currency"]) == ("30.000000", "5.000000", "USD")


@check
def payout_fixed_default_and_skus():
    pay = {"default": {"fixed": "2"},
           "groups": [{"when": {"skus": ["S1"]}, "rate": {"percent": "50"}},
                      {"when": {"categories": ["x"]}, "rate": {"fixed": "1.5"}}]}
    items = [{"sku": "S1", "category": "x", "quantity": 1, "unit_price": "3"},
             {"sku": "S2", "category": "x", "quantity": 1, "unit_price": "3"},
             {"sku": "S3", "quantity": 0, "unit_price": "3"},
             {"sku": "S4", "category": "y", "unit_price": "1"}]
    a = action([program(), contract("pa1", pct=None, payout=pay), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                conv("o1", items=items)])
    # 50% of 3 = 1.5 (S1); group x fixed 1.5 (S2); S3 qty 0 takes none; S4 default fixed 2 -> 5.0
    assert (a["amount"], a["payout"]) == ("7.000000", "5.000000"), a
    # contract without payout pays 0
    a = action([program(), contract("pa1", pct=None), click("c1", "pa1", "2026-11-09T10:00:00Z"), conv("o1")])
    assert (a["amount"], a["payout"], a["credits"][0]["payout"]) == ("100.000000", "0.000000", "0.000000")


@check
def itemless():
    a = action([program(), contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                conv("L1", et="lead", items=[], order_subtotal="12.34")])
    assert (a["amount"], a["payout"]) == ("12.340000", "1.234000")
    a = action([program(), contract("pa1", pct=None, payout={"default": {"fixed": "3"}}),
                click("c1", "pa1", "2026-11-09T10:00:00Z"), conv("L1", et="lead", items=None)])
    assert (a["amount"], a["payout"]) == ("0.000000", "3.000000"), a
    a = action([program(), contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                conv("L1", et="lead", items="absent", order_subtotal=7)])
    assert (a["amount"], a["payout"]) == ("7.000000", "0.700000"), a
    # modification with a new subtotal
    outs = run([program(), contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                conv("L1", et="lead", items=[], order_subtotal="10"),
                change("modification", "L1", "2026-11-11T00:00:00Z", et="lead", order_subtotal="25")])
    m = outs[-1]["value"]
    assert (m["change"], m["amount"], m["delta_amount"], m["payout"], m["delta_payout"]) == \
        ("modified", "25.000000", "15.000000", "2.500000", "1.500000"), m


@check
def modification_reversal_chain():
    recs = pay_base() + [
        change("modification", "o1", "2026-11-12T00:00:00Z", items=[{"sku": "A", "quantity": 1},
                                                                      {"sku": "ZZ", "quantity": 5}]),
        change("reversal", "o1", "2026-11-13T00:00:00Z", reason="cons_fraud"),
        change("modification", "o1", "2026-11-14T00:00:00Z", items=[{"sku": "A", "quantity": 2}]),
        change("reversal", "o1", "2027-03-01T00:00:00Z"),
    ]
    outs = run(recs)
    c, m, r, ar, ar2 = [o["value"] for o in outs[-5:]]
    assert c["change"] == "created" and m["action_id"] == c["action_id"] == r["action_id"]
    # A 30, B 40; discount 10 shared 30/70, 40/70: B base 40 - 40/7 = 34.2857142857..
    # payout 5 + 3.42857142857.. = 8.428571
    assert (m["change"], m["state"], m["amount"], m["delta_amount"], m["payout"], m["delta_payout"]) == \
        ("modified", "pending", "60.000000", "-30.000000", "8.428571", "-0.171429"), m
    assert m["credits"] == [dict(c["credits"][0], payout="8.428571")]
    assert m["journey"] == c["journey"] and m["occurred_at"] == c["occurred_at"]
    assert (r["change"], r["state"], r["amount"], r["delta_amount"], r["payout"], r["delta_payout"]) == \
        ("reversed", "reversed", "0.000000", "-60.000000", "0.000000", "-8.428571"), r
    assert r["credits"][0]["payout"] == "0.000000" and r["credits"][0]["weight"] == "1.000000"
    assert ar["reason"] == "already_reversed" and ar["occurred_at"] == "2026-11-14T00:00:00.000Z"
    assert ar2["reason"] == "already_reversed"   # even after locking


@check
def modification_discount_capped_and_split_payouts():
    recs = [program(credit_policy="linear"), contract("pa1"), contract("pa2"), contract("pa3"),
            click("c1", "pa1", "2026-11-07T10:00:00Z"), click("c2", "pa2", "2026-11-08T10:00:00Z"),
            click("c3", "pa3", "2026-11-09T10:00:00Z"),
            conv("o1", items=[{"sku": "A", "quantity": 1, "unit_price": "10"},
                              {"sku": "B", "quantity": 1, "unit_price": "0.01"}], order_discount="5"),
            change("modification", "o1", "2026-11-11T00:00:00Z", items=[{"sku": "A", "quantity": 0}])]
    outs = run(recs)
    c, m = outs[-2]["value"], outs[-1]["value"]
    # created: amount 5.01, payout 0.501 split 0.167/0.167/0.167
    assert (c["amount"], c["payout"]) == ("5.010000", "0.501000")
    assert [x["payout"] for x in c["credits"]] == ["0.167000", "0.167000", "0.167000"]
    # modified: only B (0.01), discount capped at 0.01 -> amount 0
    assert (m["amount"], m["delta_amount"], m["payout"], m["delta_payout"]) == \
        ("0.000000", "-5.010000", "0.000000", "-0.501000"), m


@check
def locking():
    base = [program(locking_days=10), contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z"), conv("o1")]
    o = run(base + [change("modification", "o1", "2026-11-20T11:59:59.999Z", items=[])])[-1]
    assert o["topic"] == "actions" and o["value"]["change"] == "modified" and o["value"]["delta_amount"] == "0.000000"
    assert o["value"]["locking_at"] == "2026-11-20T12:00:00.000Z"
    o = run(base + [change("reversal", "o1", "2026-11-20T12:00:00Z")])[-1]
    assert o["value"]["reason"] == "action_locked" and o["value"]["device_id"] == "d1", o
    # locking_days in force when credited: a later program change does not move it
    o = run(base + [program(locking_days=100), change("reversal", "o1", "2026-11-25T12:00:00Z")])[-1]
    assert o["value"]["reason"] == "action_locked"


@check
def unknown_order_and_duplicates():
    base = [program(), contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z"),
            conv("o1", promo_code="zz", test=True)]
    outs = run(base + [conv("o1", items=[]), change("reversal", "o2", "2026-11-11T00:00:00Z", customer_id="cu"),
                       change("reversal", "o1", "2026-11-11T00:00:00Z", dev="d2"),
                       change("reversal", "o1", "2026-11-11T00:00:00Z", et="lead")])
    a, dup, uo1, uo2, uo3 = [o["value"] for o in outs[-5:]]
    assert a["test"] is True and a["promo_code"] == "zz"
    assert dup["reason"] == "duplicate_order" and dup["test"] is False
    assert uo1["reason"] == "unknown_order" and uo1["customer_id"] == "cu" and uo1["test"] is False
    assert uo2["reason"] == "unknown_order" and uo3["reason"] == "unknown_order"
    # uncredited order: duplicates still detected; changes are unknown_order
    outs = run([program(), conv("o1"), conv("o1"), change("modification", "o1", "2026-11-11T00:00:00Z")])
    assert [o["value"]["reason"] for o in outs] == ["no_valid_referrer", "duplicate_order", "unknown_order"]
    # unknown program leaves no trace
    outs = run([conv("o1"), program(), conv("o1")])
    assert [o["value"]["reason"] for o in outs] == ["unknown_program", "no_valid_referrer"]


@check
def invalid_reasons_precedence():
    P = [program()]
    assert reason(P + [click("c1", "pa1", "2026-11-09T10:00:00Z"), conv("o1")]) == "partner_not_active"
    assert reason(P + [contract("pa1", active_to=T0), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                       conv("o1")]) == "partner_not_active"
    assert reason(P + [contract("pa1", active_from="2026-11-10T12:00:00.001Z"),
                       click("c1", "pa1", "2026-11-09T10:00:00Z"), conv("o1")]) == "partner_not_active"
    assert reason(P + [contract("pa1", event_types=[]), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                       conv("o1")]) == "event_type_not_in_contract"
    assert reason(P + [contract("pa1", event_types=["lead"]), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                       conv("o1")]) == "event_type_not_in_contract"
    assert reason(P + [contract("pa1"), click("c1", "pa1", "2026-11-11T10:00:00Z"), conv("o1")]) \
        == "outside_referral_window"
    assert reason(P + [contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z", pid="p2"), conv("o1")]) \
        == "no_valid_referrer"
    assert reason(P + [contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z", dev="d2"), conv("o1")]) \
        == "no_valid_referrer"
    # the code reasons come before the click reasons
    assert reason(P + [contract("pa1", event_types=[]), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                       conv("o1", promo_code="X")]) == "promo_code_not_assigned"
    assert reason([conv("o1")]) == "unknown_program"
    # an invalid code does not stop a click from crediting
    assert action(P + [contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                       conv("o1", promo_code="X")])["promo_code"] == "X"
    # event types: null covers all
    assert action(P + [contract("pa1", event_types=None), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                       conv("o1", et="anything")])["event_type"] == "anything"


@check
def duplicate_click_ids_and_touchpoints():
    recs = [program(), contract("pa1"), contract("pa2"),
            click("c1", "pa1", "2026-11-09T10:00:00Z"),
            click("c1", "pa2", "2026-11-09T11:00:00Z"),     # duplicate id: ignored
            conv("o1")]
    a = action(recs)
    assert a["credits"][0]["partner_id"] == "pa1" and a["journey"]["total"] == 1
    recs = [program(), contract("pa1")] + \
        [click("k%02d" % i, "pa1", "2026-11-0%dT%02d:%02d:00Z" % (1 + i // 20, i % 20, i)) for i in range(60)] + \
        [conv("o1")]
    a = action(recs)
    tp = [t["click_id"] for t in a["journey"]["touchpoints"]]
    assert a["journey"]["total"] == 60 and len(tp) == 50 and tp[0] == "k00" and tp[1] == "k11" and tp[-1] == "k59"


@check
def null_key_and_dlq():
    recs = [program(), contract("pa1"),
            {"topic": "clicks", "key": None, "value": {"click_id": "c1", "program_id": "p1", "partner_id": "pa1",
                                                       "occurred_at": "2026-11-09T10:00:00+02:00",
                                                       "customer_id": "cu"}},
            {"topic": "conversions", "key": None, "value": {"program_id": "p1", "event_type": "sale",
                                                            "order_id": "o1",
                                                            "occurred_at": "2026-11-10T12:00:00.123456Z",
                                                            "customer_id": "cu"}}]
    a = action(recs)
    assert a["credits"][0]["referring_at"] == "2026-11-09T08:00:00.000Z" and a["occurred_at"] == \
        "2026-11-10T12:00:00.123Z" and a["device_id"] is None and a["customer_id"] == "cu"
    bad = [
        {"topic": "clicks", "key": "d1", "value": None},
        {"topic": "clicks", "key": None, "value": {"click_id": "c1", "program_id": "p1", "partner_id": "pa1",
                                                   "occurred_at": T0}},
        {"topic": "clicks", "key": "d1", "value": {"type": "conversion", "click_id": "c1", "program_id": "p1",
                                                   "partner_id": "pa1", "occurred_at": T0}},
        {"topic": "clicks", "key": "d1", "value": {"click_id": "c1", "program_id": "p1", "partner_id": "pa1",
                                                   "occurred_at": T0, "source": "email"}},
        {"topic": "clicks", "key": "d1", "value": {"click_id": "c1", "program_id": "p1", "partner_id": "pa1",
                                                   "occurred_at": T0, "shared_id": "x" * 256}},
        {"topic": "clicks", "key": "d1", "value": {"click_id": 7, "program_id": "p1", "partner_id": "pa1",
                                                   "occurred_at": T0}},
        {"topic": "clicks", "key": "d1", "value": {"click_id": "c1", "program_id": "p1", "partner_id": "pa1",
                                                   "occurred_at": "yesterday"}},
        conv("o1", items=[{"sku": "A", "quantity": 1.5, "unit_price": "1"}]),
        conv("o1", items=[{"sku": "A", "quantity": -1, "unit_price": "1"}]),
        conv("o1", items=[{"sku": "A", "quantity": 1, "unit_price": "-1"}]),
        conv("o1", items=[{"sku": "A", "quantity": 1}, {"sku": "A", "quantity": 2}]),
        conv("o1", order_discount="100.01"),
        conv("o1", order_tax="-1"),
        conv("o1", customer_status="vip"),
        change("refund", "o1", T0),
        {"topic": "conversions", "key": "d1", "value": {"program_id": "p1", "event_type": "sale",
                                                        "occurred_at": T0}},
        program(referral_window_days=-1),
        program(locking_days=-1),
        program(min_click_to_conversion_secs=-1),
        program(time_decay_half_life_days="0"),
        program(credit_policy="random"),
        program(kind="weird"),
        {"topic": "config", "key": "program/p2", "value": {"type": "program", "program_id": "p1",
                                                           "account_id": "a"}},
        {"topic": "config", "key": "program/p1", "value": {"type": "program", "program_id": "p1"}},
        contract("pa1", pct="101"),
        contract("pa1", pct="-1"),
        contract("pa1", pct=None, payout={"default": {"fixed": "-1"}}),
        contract("pa1", pct=None, payout={"default": {"fixed": "1", "percent": "1"}}),
        contract("pa1", pct=None, payout={"default": {}}),
        contract("pa1", active_to="2025-01-01T00:00:00Z"),
        contract("pa1", credit_group="gold"),
        contract("pa1", referral_window_days=-3),
        promo("SAVE", "pa1", "sometimes"),
        promo("SAVE", "pa1", "always", valid_from="2026-02-01T00:00:00Z", valid_to="2026-01-01T00:00:00Z"),
        {"topic": "promo_codes", "key": "p1/OTHER", "value": {"type": "promo_code", "program_id": "p1",
                                                              "code": "save", "partner_id": "pa1",
                                                              "credit_policy": "always"}},
        {"topic": "config", "key": "cross_program/acme", "value": {"type": "cross_program", "account_id": "acme"}},
    ]
    for b in bad:
        o = run([program(), contract("pa1"), b])
        assert len(o) == 1 and o[0]["topic"] == "dlq", (b, o)
        h = o[0]["headers"]
        assert h["attrib.source.topic"] == b["topic"] and h["attrib.source.offset"] == "2", h
        assert o[0]["key"] == b["key"] and o[0]["value"] == b["value"], o
    o = run(["not json", '{"topic":"nope","key":"k","value":{}}'])
    assert o[0]["value"] == "not json" and o[0]["key"] is None and o[0]["headers"]["attrib.source.topic"] == "replay"
    assert o[1]["headers"]["attrib.source.topic"] == "nope" and o[1]["headers"]["attrib.source.offset"] == "1"
    # a rejected record leaves the previous version in place
    a = action([program(), contract("pa1"), contract("pa1", pct="101"), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                conv("o1")])
    assert a["payout"] == "10.000000"
    # config tombstone deletes
    assert reason([program(), contract("pa1"), {"topic": "config", "key": "contract/p1/pa1", "value": None},
                   click("c1", "pa1", "2026-11-09T10:00:00Z"), conv("o1")]) == "partner_not_active"


@check
def money_as_json_numbers():
    line = ('{"topic":"conversions","key":"d1","value":{"program_id":"p1","event_type":"sale","order_id":"o1",'
            '"occurred_at":"2026-11-10T12:00:00Z","items":[{"sku":"A","quantity":3,"unit_price":0.1}],'
            '"order_discount":0.10}}')
    a = action([program(), contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z"), line])
    assert (a["amount"], a["payout"]) == ("0.200000", "0.020000"), a
    # the DLQ keeps the number text
    out = io.StringIO()
    eng = attrib_ref.Engine(out)
    eng.line('{"topic":"conversions","key":"d1","value":{"order_tax":-1.50,"x":1e5}}', 0)
    assert '"value":{"order_tax":-1.50,"x":1e5}' in out.getvalue(), out.getvalue()


@check
def half_even_rounding():
    # 10% of 0.123455 = 0.0123455 -> half-even -> 0.012346 (6th digit 5 is odd -> up)
    a = action([program(), contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                conv("o1", items=[{"quantity": 1, "unit_price": "0.123455"}])])
    assert a["payout"] == "0.012346", a
    a = action([program(), contract("pa1"), click("c1", "pa1", "2026-11-09T10:00:00Z"),
                conv("o1", items=[{"quantity": 1, "unit_price": "0.123465"}])])
    assert a["payout"] == "0.012346", a
    # linear split of the same: exact weights 1/3 each, payout stays half-even on the exact sum
    a = action([program(credit_policy="linear"), contract("pa1"), contract("pa2"), contract("pa3"),
                click("c1", "pa1", "2026-11-07T10:00:00Z"), click("c2", "pa2", "2026-11-08T10:00:00Z"),
                click("c3", "pa3", "2026-11-09T10:00:00Z"),
                conv("o1", items=[{"quantity": 1, "unit_price": "0.123455"}])])
    assert a["payout"] == "0.012346" and [c["payout"] for c in a["credits"]] == ["0.004115", "0.004115",
                                                                                 "0.004116"], a


# ------------------------------------------------------------------ §6 cross-device identity stitching

SAME = object()   # key = the record's device_id


def sclick(cid, partner, at, dev=None, cust=None, pid="p1", key=SAME, **kw):
    """A click that carries its ids in the value (device_id / customer_id)."""
    v = {"type": "click", "click_id": cid, "program_id": pid, "partner_id": partner, "occurred_at": at}
    if dev is not None:
        v["device_id"] = dev
    if cust is not None:
        v["customer_id"] = cust
    v.update(kw)
    return {"topic": "clicks", "key": dev if key is SAME else key, "value": v}


def sconv(oid, dev=None, cust=None, at=T0, pid="p1", key=SAME, **kw):
    v = {"type": "conversion", "program_id": pid, "event_type": "sale", "order_id": oid, "occurred_at": at,
         "items": [{"sku": "A", "category": "shoes", "quantity": 1, "unit_price": "100.00"}]}
    if dev is not None:
        v["device_id"] = dev
    if cust is not None:
        v["customer_id"] = cust
    v.update(kw)
    return {"topic": "conversions", "key": dev if key is SAME else key, "value": v}


def schange(typ, oid, at, dev=None, cust=None, key=SAME, **kw):
    v = {"type": typ, "program_id": "p1", "event_type": "sale", "order_id": oid, "occurred_at": at}
    if dev is not None:
        v["device_id"] = dev
    if cust is not None:
        v["customer_id"] = cust
    v.update(kw)
    return {"topic": "conversions", "key": dev if key is SAME else key, "value": v}


def identify(dev, cust, at="2026-11-09T12:00:00Z", key=SAME, **kw):
    v = {"type": "identify", "device_id": dev, "customer_id": cust, "occurred_at": at}
    v.update(kw)
    return {"topic": "identities", "key": dev if key is SAME else key, "value": v}


def srun(records):
    return run(records, stitching=True)


def sact(records):
    o = srun(records)[-1]
    assert o["topic"] == "actions", o
    return o["value"]


def creds(a):
    return [(c["partner_id"], c["click_id"], c["device_id"]) for c in a["credits"]]


def tps(a):
    return [(t["click_id"], t["device_id"]) for t in a["journey"]["touchpoints"]]


@check
def device_id_on_credits_and_touchpoints():
    # stitching off: the click's own device_id (null when it had none); null on a promo credit
    a = action([program(credit_policy="linear"), contract("pa1"), contract("pa2"),
                click("c1", "pa1", "2026-11-08T10:00:00Z", device_id="dA"),
                click("c2", "pa2", "2026-11-09T10:00:00Z"),
                conv("o1")])
    assert creds(a) == [("pa1", "c1", "dA"), ("pa2", "c2", None)], creds(a)
    assert tps(a) == [("c1", "dA"), ("c2", None)], tps(a)
    assert list(a["credits"][0]) == ["partner_id", "weight", "payout", "referral_type", "click_id", "device_id",
                                     "promo_code", "referring_at", "shared_id", "sub_ids"], list(a["credits"][0])
    assert list(a["journey"]["touchpoints"][0]) == ["click_id", "device_id", "program_id", "partner_id",
                                                    "occurred_at"]
    assert a["device_id"] == "d1"   # the action's own device_id stays the conversion's
    a = action([program(), contract("pa1"), promo("SAVE", "pa1", "always"),
                click("c1", "pa1", "2026-11-09T10:00:00Z", device_id="d1"), conv("o1", promo_code="save")])
    assert a["credits"][0]["device_id"] is None and a["credits"][0]["referral_type"] == "promo_code"
    assert tps(a) == [("c1", "d1")]
    # stitching on: the same fields, a cross-device credit shows the other device
    a = sact([program(), contract("pa1"), sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d2", cust="cu1"),
              sconv("o1", dev="d1", cust="cu1")])
    assert creds(a) == [("pa1", "c1", "d2")] and (a["device_id"], a["customer_id"]) == ("d1", "cu1"), a


@check
def stitching_off_ignores_identify_records():
    recs = [program(), contract("pa1"),
            sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d2"),
            identify("d2", "cu1"),
            {"topic": "identities", "key": "d2", "value": None},
            {"topic": "identities", "key": 5, "value": "junk"},
            identify("d9", "cu1", key="cu1"),
            sconv("o1", dev="d1", cust="cu1")]
    outs, eng = run_eng(recs)
    assert [o["topic"] for o in outs] == ["invalid_actions"], outs
    assert outs[0]["value"]["reason"] == "no_valid_referrer" and eng.links == {}
    # the same stream with stitching on: the identify links d2, the bad ones go to the DLQ
    outs = srun(recs)
    assert [o["topic"] for o in outs] == ["dlq", "dlq", "dlq", "actions"], outs
    # (a key that is not a string is a bad replay line, as on every topic)
    assert [o["headers"]["attrib.source.topic"] for o in outs[:3]] == ["identities", "replay", "identities"]
    assert [o["headers"]["attrib.source.offset"] for o in outs[:3]] == ["4", "5", "6"]
    assert creds(outs[-1]["value"]) == [("pa1", "c1", "d2")]


@check
def link_by_identify():
    base = [program(), contract("pa1"), sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d2")]
    # not linked: the phone's conversion sees only its own journey
    assert reason_s(base + [sconv("o1", dev="d1", cust="cu1")]) == "no_valid_referrer"
    outs, eng = run_eng(base + [identify("d2", "cu1", key=None), sconv("o1", dev="d1", cust="cu1")], True)
    a = outs[-1]["value"]
    assert creds(a) == [("pa1", "c1", "d2")] and eng.links == {"d2": "cu1", "d1": "cu1"}, (a, eng.links)
    assert eng.counts["moves"] == 1 and eng.counts["moved_clicks"] == 1
    # a record of the linked device without customer_id goes to the customer's journey
    a = sact(base + [identify("d2", "cu1"), sclick("c2", "pa1", "2026-11-09T11:00:00Z", dev="d3", cust="cu1"),
                     sconv("o1", dev="d2")])
    assert creds(a) == [("pa1", "c2", "d3")] and a["customer_id"] is None and a["device_id"] == "d2", a
    # an identify's occurred_at does not matter: a late one still links at its place in the file
    a = sact(base + [identify("d2", "cu1", at="2020-01-01T00:00:00Z"), sconv("o1", cust="cu1", key="cu1")])
    assert creds(a) == [("pa1", "c1", "d2")] and a["device_id"] is None


def reason_s(records):
    o = srun(records)[-1]
    assert o["topic"] == "invalid_actions", o
    return o["value"]["reason"]


@check
def link_by_click():
    outs, eng = run_eng([program(credit_policy="linear"), contract("pa1"), contract("pa2"),
                         sclick("c1", "pa1", "2026-11-08T10:00:00Z", dev="d2"),
                         sclick("c2", "pa2", "2026-11-09T10:00:00Z", dev="d2", cust="cu1"),
                         sconv("o1", dev="d1", cust="cu1")], True)
    a = outs[-1]["value"]
    assert creds(a) == [("pa1", "c1", "d2"), ("pa2", "c2", "d2")], creds(a)
    assert eng.links == {"d2": "cu1", "d1": "cu1"}
    # a linking click that is a duplicate id is ignored, but it still links (and moves)
    outs, eng = run_eng([program(), contract("pa1"), contract("pa2"),
                         sclick("c1", "pa1", "2026-11-08T10:00:00Z", dev="d2"),
                         sclick("c1", "pa2", "2026-11-09T10:00:00Z", dev="d2", cust="cu1"),
                         sconv("o1", cust="cu1", key=None)], True)
    a = outs[-1]["value"]
    assert creds(a) == [("pa1", "c1", "d2")] and eng.links == {"d2": "cu1"}, a
    # modifications and reversals never link
    outs, eng = run_eng([program(), schange("reversal", "o1", T0, dev="d2", cust="cu1")], True)
    assert outs[-1]["value"]["reason"] == "unknown_order" and eng.links == {}


@check
def link_by_conversion():
    recs = [program(), contract("pa1"), contract("pa2"),
            sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d2"),
            sconv("o1", dev="d2", cust="cu1")]               # links d2 before it is attributed
    a = sact(recs)
    assert creds(a) == [("pa1", "c1", "d2")] and a["customer_id"] == "cu1"
    # a conversion of an unknown program still links
    outs, eng = run_eng(recs + [sconv("o2", dev="d4", cust="cu1", pid="pX"),
                                sclick("c4", "pa2", "2026-11-10T10:00:00Z", dev="d4"),
                                sconv("o3", dev="d1", cust="cu1")], True)
    assert outs[-2]["value"]["reason"] == "unknown_program" and eng.links["d4"] == "cu1"
    a = outs[-1]["value"]
    assert creds(a) == [("pa2", "c4", "d4")] and [t[0] for t in tps(a)] == ["c1", "c4"], a
    # the move comes before the linking record: the same order in the anonymous journey is a duplicate
    outs, eng = run_eng([program(), sconv("o1", dev="d2"), sconv("o1", dev="d2", cust="cu1")], True)
    assert [o["value"]["reason"] for o in outs] == ["no_valid_referrer", "duplicate_order"], outs
    assert eng.counts["moved_orders"] == 1


@check
def move_with_tie():
    t1 = "2026-11-09T10:00:00Z"
    base = [contract("pa1"), contract("pa2"), contract("pa3"),
            sclick("c2", "pa2", t1, dev="d2"),                 # anonymous, first in the file
            sclick("c3", "pa3", t1, dev="d2"),
            sclick("c1", "pa1", t1, dev="d1", cust="cu1"),     # the customer's, later in the file
            identify("d2", "cu1"),                              # c2, c3 arrive now, after c1, in their order
            sconv("o1", dev="d1", cust="cu1")]
    a = sact([program(credit_policy="linear")] + base)
    assert [(c["partner_id"], c["weight"]) for c in a["credits"]] == \
        [("pa1", "0.333333"), ("pa2", "0.333333"), ("pa3", "0.333334")], a["credits"]
    assert tps(a) == [("c1", "d1"), ("c2", "d2"), ("c3", "d2")], tps(a)
    assert creds(sact([program()] + base)) == [("pa3", "c3", "d2")]                 # latest: moved last
    assert creds(sact([program(credit_policy="first_click")] + base)) == [("pa1", "c1", "d1")]
    # without stitching the file order decides (and the journeys are apart): d1's click only
    assert creds(action([program(credit_policy="linear")] + base)) == [("pa1", "c1", "d1")]


@check
def click_id_collision_on_move():
    recs = [program(credit_policy="linear"), contract("pa1"), contract("pa2"), contract("pa3"),
            sclick("cX", "pa2", "2026-11-08T10:00:00Z", dev="d2"),          # anonymous
            sclick("c5", "pa3", "2026-11-08T11:00:00Z", dev="d2"),
            sclick("cX", "pa1", "2026-11-09T10:00:00Z", dev="d1", cust="cu1"),
            identify("d2", "cu1"),
            sconv("o1", dev="d2")]                                              # d2 is linked: cu1's journey
    outs, eng = run_eng(recs, True)
    a = outs[-1]["value"]
    assert tps(a) == [("c5", "d2"), ("cX", "d1")], tps(a)   # the customer's cX stands
    assert creds(a) == [("pa3", "c5", "d2"), ("pa1", "cX", "d1")], creds(a)
    assert eng.counts["dropped_clicks"] == 1 and eng.counts["moved_clicks"] == 1


@check
def order_collision_on_move():
    base = [program(), contract("pa1", pct="10"), contract("pa2", pct="20"),
            sclick("c2", "pa2", "2026-11-09T10:00:00Z", dev="d2"),
            sconv("o1", dev="d2"),                                    # anonymous order, credited to pa2
            sclick("c1", "pa1", "2026-11-09T11:00:00Z", cust="cu1", key="cu1"),
            sconv("o1", cust="cu1", key="cu1", at="2026-11-10T12:05:00Z")]   # the customer's, credited to pa1
    outs, eng = run_eng(base + [identify("d2", "cu1"),
                                schange("reversal", "o1", "2026-11-11T00:00:00Z", dev="d2"),
                                sconv("o1", dev="d2", at="2026-11-12T00:00:00Z"),
                                schange("reversal", "o1", "2026-11-12T00:00:00Z", dev="d2", key=None)], True)
    anon, cust, rev, dup, again = [o["value"] for o in outs[-5:]]
    assert creds(anon) == [("pa2", "c2", "d2")] and creds(cust) == [("pa1", "c1", None)]
    assert anon["action_id"] == cust["action_id"]   # deterministic in (program, event type, order)
    assert eng.counts["dropped_orders"] == 1 and eng.counts["moved_orders"] == 0
    # the change keyed by d2 reaches the customer's order (the moved one was dropped)
    assert (rev["change"], rev["customer_id"], rev["device_id"], rev["delta_payout"]) == \
        ("reversed", "cu1", None, "-10.000000"), rev
    assert dup["reason"] == "duplicate_order" and again["reason"] == "already_reversed"
    # the customer's order stands even when it earned nobody credit
    outs = srun([program(), contract("pa2"), sclick("c2", "pa2", "2026-11-09T10:00:00Z", dev="d2"),
                 sconv("o1", dev="d2"), sconv("o1", cust="cu1", key=None), identify("d2", "cu1"),
                 schange("reversal", "o1", "2026-11-11T00:00:00Z", cust="cu1", key="cu1")])
    assert [o["topic"] for o in outs] == ["actions", "invalid_actions", "invalid_actions"]
    u = outs[-1]["value"]
    assert (u["reason"], u["customer_id"], u["device_id"]) == ("unknown_order", "cu1", None), u


@check
def conflict_first_link_stands():
    recs = [program(), contract("pa1"), contract("pa2"),
            identify("d1", "cu1"),
            identify("d1", "cu2"),                                              # conflict: no effect
            sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d1", cust="cu2"),  # conflict: goes to cu2
            sclick("c2", "pa2", "2026-11-09T11:00:00Z", dev="d1"),              # anonymous: cu1
            sconv("o1", cust="cu2", key="cu2"),
            sconv("o2", dev="d1"),
            sconv("o3", dev="d1", cust="cu2")]                                  # conflict: cu2's journey
    outs, eng = run_eng(recs, True)
    o1, o2, o3 = [o["value"] for o in outs]
    assert creds(o1) == [("pa1", "c1", "d1")] and creds(o2) == [("pa2", "c2", "d1")], (o1, o2)
    assert creds(o3) == [("pa1", "c1", "d1")] and (o3["device_id"], o3["customer_id"]) == ("d1", "cu2")
    assert eng.links == {"d1": "cu1"} and eng.counts["conflicts"] == 3 and eng.counts["links"] == 1
    # the same link again is no conflict
    _, eng = run_eng([identify("d1", "cu1"), identify("d1", "cu1"),
                      sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d1", cust="cu1")], True)
    assert eng.counts["conflicts"] == 0


@check
def customer_only_records_and_equal_ids():
    recs = [program(), contract("pa1"), contract("pa2"),
            sclick("c1", "pa1", "2026-11-09T10:00:00Z", cust="cu1", key="any-key"),   # customer's journey
            sclick("c2", "pa2", "2026-11-09T11:00:00Z", key="cu1"),   # no ids: device "cu1", anonymous
            sconv("o1", cust="cu1", key=None),
            sconv("o2", key="cu1")]
    outs, eng = run_eng(recs, True)
    a1, a2 = outs[-2]["value"], outs[-1]["value"]
    assert creds(a1) == [("pa1", "c1", None)] and a1["journey"]["total"] == 1, a1
    assert creds(a2) == [("pa2", "c2", None)] and a2["journey"]["total"] == 1, a2
    assert eng.links == {} and set(eng.journeys) == {("c", "cu1"), ("d", "cu1")}
    # a customer journey and an anonymous journey stay apart even after a link of another device
    a = sact(recs[:5] + [identify("d1", "cu1"), sconv("o3", dev="d1")])
    assert creds(a) == [("pa1", "c1", None)]
    # stitching off: one journey "cu1" (the key) holds both
    a = action(recs[:3] + [sclick("c1", "pa1", "2026-11-09T10:00:00Z", cust="cu1", key=None), recs[4],
                           sconv("o1", cust="cu1", key=None)])
    assert a["journey"]["total"] == 2


@check
def change_routed_through_link():
    base = [program(), contract("pa1"), sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d2"),
            sconv("o1", dev="d2")]
    outs = srun(base + [
        schange("modification", "o1", "2026-11-11T00:00:00Z", cust="cu1", key="cu1", items=[{"sku": "A",
                                                                                            "quantity": 2}]),
        identify("d2", "cu1"), identify("d3", "cu1"),
        schange("modification", "o1", "2026-11-11T01:00:00Z", cust="cu1", key="cu1", items=[{"sku": "A",
                                                                                            "quantity": 2}]),
        schange("modification", "o1", "2026-11-11T02:00:00Z", dev="d3", items=[{"sku": "A", "quantity": 3}]),
        schange("modification", "o1", "2026-11-11T03:00:00Z", dev="d2", cust="cu9"),
        schange("reversal", "o1", "2026-11-11T04:00:00Z", dev="d2", key=None)])
    c, u1, m1, m2, u2, r = [o["value"] for o in outs]
    assert c["change"] == "created" and (u1["reason"], u1["customer_id"]) == ("unknown_order", "cu1"), u1
    assert (m1["change"], m1["amount"], m1["delta_amount"]) == ("modified", "200.000000", "100.000000"), m1
    assert (m2["change"], m2["amount"], m2["customer_id"], m2["device_id"]) == \
        ("modified", "300.000000", None, "d2"), m2       # the action keeps the conversion's fields
    assert (u2["reason"], u2["customer_id"], u2["device_id"]) == ("unknown_order", "cu9", "d2"), u2
    assert (r["change"], r["state"], r["delta_amount"]) == ("reversed", "reversed", "-300.000000"), r
    assert r["journey"] == c["journey"] and creds(r) == [("pa1", "c1", "d2")]


@check
def change_without_ids_is_dlq():
    recs = [program(), contract("pa1"), sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d1"),
            sconv("o1", dev="d1"), change("reversal", "o1", "2026-11-11T00:00:00Z", dev="d1")]
    o = srun(recs)[-1]
    assert o["topic"] == "dlq" and o["key"] == "d1" and o["value"] == recs[-1]["value"], o
    err = o["headers"]["attrib.error"]
    assert "device_id" in err and "customer_id" in err, err
    assert o["headers"]["attrib.source.topic"] == "conversions" and o["headers"]["attrib.source.offset"] == "4"
    # stitching off: the key finds the order
    assert run(recs)[-1]["value"]["change"] == "reversed"


@check
def key_not_device_is_dlq():
    bad = [sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d1", cust="cu1", key="cu1"),
           sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d1", key="d2"),
           sconv("o1", dev="d1", key="cu1"),
           sconv("o1", dev="d1", cust="cu1", key="d2"),
           schange("modification", "o1", T0, dev="d1", cust="cu1", key="cu1"),
           schange("reversal", "o1", T0, dev="d1", key="d2"),
           identify("d1", "cu1", key="cu1"),
           identify("d1", "cu1", key="d2")]
    for b in bad:
        o, eng = run_eng([program(), contract("pa1"), b], True)
        assert len(o) == 1 and o[0]["topic"] == "dlq", (b, o)
        assert o[0]["key"] == b["key"] and o[0]["value"] == b["value"]
        assert "device_id" in o[0]["headers"]["attrib.error"] and "key" in o[0]["headers"]["attrib.error"]
        assert eng.links == {} and eng.journeys == {}, b   # a refused record does not link
    # a null key takes the device_id
    outs, eng = run_eng([program(), contract("pa1"),
                         sclick("c1", "pa1", "2026-11-09T10:00:00Z", dev="d1", key=None),
                         identify("d1", "cu1", key=None),
                         sconv("o1", dev="d1", key=None),
                         schange("reversal", "o1", "2026-11-11T00:00:00Z", dev="d1", key=None)], True)
    assert [o["value"]["change"] for o in outs] == ["created", "reversed"] and eng.links == {"d1": "cu1"}
    # no ids and no key: DLQ as always
    o = srun([program(), sclick("c1", "pa1", T0, key=None)])
    assert o[0]["topic"] == "dlq"
    # stitching off the key is the journey: the same records are fine
    assert run([program(), contract("pa1"), bad[0], sconv("o1", dev="d1", key="cu1")])[-1]["topic"] == "actions"


@check
def identify_validation():
    bad = [{"topic": "identities", "key": "d1", "value": None},
           {"topic": "identities", "key": "d1", "value": "d1=cu1"},
           identify("d1", "cu1", type="click"),
           identify("d1", "cu1", occurred_at="yesterday"),
           identify("d1", 7),
           identify("d1", None),
           identify(None, "cu1", key="d1"),
           {"topic": "identities", "key": "d1", "value": {"type": "identify", "device_id": "d1",
                                                          "customer_id": "cu1"}}]
    for b in bad:
        o, eng = run_eng([b], True)
        assert len(o) == 1 and o[0]["topic"] == "dlq" and eng.links == {}, (b, o)
        h = o[0]["headers"]
        assert h["attrib.source.topic"] == "identities" and h["attrib.source.offset"] == "0"
        assert o[0]["key"] == b["key"] and o[0]["value"] == b["value"]
    # type may be absent; unknown fields are ignored; no output
    o, eng = run_eng([{"topic": "identities", "key": "d1", "value": {"device_id": "d1", "customer_id": "cu1",
                                                                     "occurred_at": T0, "extra": 1}}], True)
    assert o == [] and eng.links == {"d1": "cu1"}


@check
def merged_journey_touchpoint_cap():
    recs = [program(), contract("pa1")]
    recs += [sclick("a%02d" % i, "pa1", "2026-11-01T%02d:00:00Z" % i, dev="d2") for i in range(20)]
    recs += [sclick("b%02d" % i, "pa1", "2026-11-02T%02d:00:00Z" % i, dev="d1", cust="cu1") for i in range(20)]
    recs += [sclick("e%02d" % i, "pa1", "2026-11-03T%02d:00:00Z" % i, dev="d2") for i in range(20)]
    recs += [identify("d2", "cu1"), sconv("o1", cust="cu1", key="cu1")]
    a = sact(recs)
    tp = [t["click_id"] for t in a["journey"]["touchpoints"]]
    assert a["journey"]["total"] == 60 and len(tp) == 50, a["journey"]["total"]
    assert tp[0] == "a00" and tp[1] == "a11" and tp[10] == "b00" and tp[-1] == "e19", tp
    assert a["credits"][0]["click_id"] == "e19" and a["credits"][0]["device_id"] == "d2"


@check
def stitching_settings():
    f = attrib_ref.stitching_setting
    assert f(False, None, {}) is False and f(True, None, {}) is True
    assert f(False, None, {"ATTRIB_IDENTITY_STITCHING": "true"}) is True
    assert f(False, None, {"ATTRIB_IDENTITY_STITCHING": "1"}) is True
    assert f(False, None, {"ATTRIB_IDENTITY_STITCHING": "TRUE"}) is True
    assert f(False, None, {"ATTRIB_IDENTITY_STITCHING": "false"}) is False
    assert f(False, None, {"ATTRIB_IDENTITY_STITCHING": "0"}) is False
    try:
        f(False, None, {"ATTRIB_IDENTITY_STITCHING": "maybe"})
        raise AssertionError("accepted 'maybe'")
    except ValueError:
        pass
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        on, off = os.path.join(d, "on.toml"), os.path.join(d, "off.toml")
        with open(on, "w") as fh:
            fh.write('brokers = "x:9092"\n[identity]\nstitching = true\n')
        with open(off, "w") as fh:
            fh.write('identity.stitching = false\n')
        assert f(False, on, {}) is True and f(False, off, {}) is False
        assert f(False, on, {"ATTRIB_IDENTITY_STITCHING": "false"}) is False   # the environment wins
        assert f(True, off, {"ATTRIB_IDENTITY_STITCHING": "false"}) is True    # the flag wins


def main():
    failed = 0
    for f in CHECKS:
        try:
            f()
            print("ok   ", f.__name__)
        except AssertionError as e:
            failed += 1
            print("FAIL ", f.__name__, e)
    print("%d checks, %d failed" % (len(CHECKS), failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
