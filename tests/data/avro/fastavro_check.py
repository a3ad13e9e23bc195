#!/usr/bin/env python3
"""Interop check for tests/avro.rs, with Python fastavro and the schemas in schemas/.

    fastavro_check.py read SCHEMAS_DIR  < cases.json   decodes attrib's Avro output
    fastavro_check.py write SCHEMAS_DIR                writes Avro input for attrib to decode

`read` takes a JSON list of {"stem", "framing": "single_object"|"confluent", "hex", and for
confluent "id" and "registered" (the schema text attrib registered)}. It checks the framing (the
single-object fingerprint must be fastavro's CRC-64-AVRO of the schema file's canonical form;
the registered schema must have the same canonical form as the file), decodes the body with
fastavro against the schema file, and prints the records as a JSON list (decimals as strings,
timestamps as epoch milliseconds).

`write` prints a JSON list of {"stem", "hex"}: single-object records written by fastavro.
"""
import datetime
import decimal
import io
import json
import os
import struct
import sys

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def load(schemas_dir, stem):
    with open(os.path.join(schemas_dir, stem + ".avsc")) as f:
        return json.load(f)


def plain(v):
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        return (v - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def read(schemas_dir):
    out = []
    for c in json.load(sys.stdin):
        file_schema = load(schemas_dir, c["stem"])
        reader = fastavro.parse_schema(file_schema)
        data = bytes.fromhex(c["hex"])
        if c["framing"] == "single_object":
            assert data[:2] == b"\xc3\x01", "single-object magic"
            fp = fingerprint(to_parsing_canonical_form(file_schema), "CRC-64-AVRO")
            assert data[2:10].hex() == fp, f"fingerprint {data[2:10].hex()} != fastavro's {fp}"
            writer, body = reader, data[10:]
        else:
            assert data[0] == 0, "confluent magic"
            (schema_id,) = struct.unpack(">I", data[1:5])
            assert schema_id == c["id"], f"schema id {schema_id} != {c['id']}"
            registered = json.loads(c["registered"])
            assert to_parsing_canonical_form(registered) == to_parsing_canonical_form(
                file_schema
            ), "registered schema differs from the schema file"
            writer, body = fastavro.parse_schema(registered), data[5:]
        bio = io.BytesIO(body)
        rec = fastavro.schemaless_reader(bio, writer, reader)
        assert bio.tell() == len(body), f"{len(body) - bio.tell()} trailing bytes"
        out.append(plain(rec))
    json.dump(out, sys.stdout)


def single_object(schema, record):
    parsed = fastavro.parse_schema(schema)
    fp = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    bio = io.BytesIO()
    fastavro.schemaless_writer(bio, parsed, record)
    return (b"\xc3\x01" + bytes.fromhex(fp) + bio.getvalue()).hex()


def write(schemas_dir):
    D = decimal.Decimal
    t = datetime.datetime(2026, 11, 2, 10, 0, 0, 123000, tzinfo=datetime.timezone.utc)
    conversion = {
        "program_id": "p1",
        "event_type": "sale",
        "order_id": "o-py",
        "occurred_at": t,
        "device_id": "d-1",
        "customer_id": None,
        "click_id": None,
        "promo_code": "save10",
        "customer_status": "new",
        "currency": "EUR",
        "order_subtotal": None,
        "order_discount": D("5.000000"),
        "order_tax": D("0.000000"),
        "order_shipping": None,
        "items": [
            {"sku": "A1", "category": "shoes", "quantity": D("2.000000"), "unit_price": D("19.990000")},
            {"sku": "B2", "category": None, "quantity": D("1.000000"), "unit_price": D("-0.000000")},
        ],
        "test": True,
    }
    contract = {
        "program_id": "p1",
        "partner_id": "pa1",
        "active_from": t,
        "active_to": None,
        "credit_group": "standard",
        "referral_window_days": 14,
        "event_types": ["sale"],
        "payout": {
            "default": {"percent": D("12.500000"), "fixed": None},
            "groups": [{"when": {"customer_status": "new", "categories": ["shoes"], "skus": None},
                        "rate": {"percent": None, "fixed": D("5.000000")}}],
        },
    }
    out = [
        {"stem": "conversion", "hex": single_object(load(schemas_dir, "conversion"), conversion)},
        {"stem": "contract", "hex": single_object(load(schemas_dir, "contract"), contract)},
    ]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    {"read": read, "write": write}[sys.argv[1]](sys.argv[2])
