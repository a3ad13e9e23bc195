#!/usr/bin/env python3
"""The read_committed view of topics, computed from a nisshi sqlite database.

nisshi 0.7.0 returns no aborted-transaction index in its fetch responses, so librdkafka's
read_committed consumers also see the records of aborted transactions. Kafka's broker keeps
that index from the transaction markers; this script applies the same rule to the records
nisshi stored: a transactional record is visible once a COMMIT marker of its producer follows
it in the partition, hidden when an ABORT marker does, and not yet visible while neither has.

usage: committed_view.py NISSHI_DB TOPIC... > records.jsonl
Each output line: {"topic", "partition", "offset", "key", "value", "headers"} with key and
value hex-encoded (null when absent) and headers as {name: utf-8 text}.
"""
import json
import sqlite3
import struct
import sys

CONTROL = 0x20


def hexed(b):
    return None if b is None else bytes(b).hex()


def main():
    db, topics = sys.argv[1], sys.argv[2:]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    for topic in topics:
        parts = con.execute(
            "select tp.id, tp.partition from topition tp join topic t on tp.topic = t.id "
            "where t.name = ? order by tp.partition",
            (topic,),
        ).fetchall()
        for tp_id, partition in parts:
            headers = {}
            for offset, k, v in con.execute(
                "select offset_id, k, v from header where topition = ? order by offset_id, ordinal",
                (tp_id,),
            ):
                headers.setdefault(offset, {})[bytes(k).decode()] = (
                    None if v is None else bytes(v).decode("utf-8", "replace")
                )
            pending = {}
            rows = con.execute(
                "select offset_id, attributes, producer_id, k, v from record "
                "where topition = ? order by offset_id",
                (tp_id,),
            )
            for offset, attributes, producer, k, v in rows:
                rec = {
                    "topic": topic,
                    "partition": partition,
                    "offset": offset,
                    "key": hexed(k),
                    "value": hexed(v),
                    "headers": headers.get(offset, {}),
                }
                if producer is None:
                    print(json.dumps(rec))
                elif (attributes or 0) & CONTROL:
                    _version, kind = struct.unpack(">hh", bytes(k)[:4])
                    done = pending.pop(producer, [])
                    if kind == 1:
                        for r in done:
                            print(json.dumps(r))
                else:
                    pending.setdefault(producer, []).append(rec)


if __name__ == "__main__":
    main()
