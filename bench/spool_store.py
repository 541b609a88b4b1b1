"""Benchmark of the spool's storage: the frame file against SQLite in WAL mode (a script).

    .venv/bin/python bench/spool_store.py                  # 100,000 records
    .venv/bin/python bench/spool_store.py --records 20000

Issue 10 asked to choose between fixing the hand-written frame format's recovery and
letting SQLite (standard library, WAL, synchronous=FULL) be the spool. This measures both
on the same records (a real usage event, ~600 bytes), each durable when ``append`` returns:

* append: records/s and per-append p50/p99, for batches of 1 (a gateway emitting one
  event while spooling) and of 1,000 (the sender's batches under load);
* drain: read in chunks of 5,000 and commit each, as the resend task does;
* open: opening a full spool (the frame spool checks every frame's CRCs);
* damage: one byte flipped, in the middle of the file or at the start of a 4 KiB page in
  its middle (SQLite's b-tree page header), then opened again: how many records are still
  readable and how many are still exactly what was appended. The frame spool quarantines
  the damaged frame and keeps the rest; SQLite has no page checksums, so what it returns
  depends on what the byte hit, and an altered record can come back as if intact.

SQLite here is a prototype written for the comparison, not used by the ledger.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger.producer import LedgerProducer
from ledger.producer.sending import route_table
from ledger.producer.spool import SPOOL_FILE, Spool, SpoolRecord
from ledger.routing import Topics


def sample_record() -> SpoolRecord:
    producer = LedgerProducer("127.0.0.1:1")
    event = producer.events.usage(
        api_key_id=uuid.uuid4(), request_id="req-1", model="gpt-4o-mini", provider="openai",
        prompt_tokens=1200, completion_tokens=350, cache_read_input_tokens=1024,
        latency_ms=840, metadata={"team": "search"})
    topic, headers, dump = route_table(Topics())[type(event)]
    return SpoolRecord(topic, event.partition_key().encode(), dump(event), headers)


class SqliteSpool:
    """The same interface as Spool, on SQLite: WAL, synchronous=FULL, one row per record."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "spool.sqlite"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
        self.db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, "
                        "topic TEXT, key BLOB, value BLOB, headers TEXT, spooled_at INTEGER)")

    def append(self, records: list[SpoolRecord]) -> None:
        now = time.time_ns() // 1_000_000
        rows = [(r.topic, r.key, r.value, json.dumps([[n, v.decode()] for n, v in r.headers]),
                 now) for r in records]
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO spool (topic, key, value, headers, spooled_at) "
                            "VALUES (?, ?, ?, ?, ?)", rows)
        self.db.execute("COMMIT")

    def read(self, max_records: int) -> tuple[list[SpoolRecord], int]:
        rows = self.db.execute("SELECT seq, topic, key, value, headers FROM spool "
                               "ORDER BY seq LIMIT ?", (max_records,)).fetchall()
        records = [SpoolRecord(topic, key, value,
                               [(n, v.encode()) for n, v in json.loads(headers)])
                   for _, topic, key, value, headers in rows]
        return records, rows[-1][0] if rows else 0

    def commit(self, offset: int) -> None:
        self.db.execute("DELETE FROM spool WHERE seq <= ?", (offset,))

    def values(self) -> list[bytes]:
        return [value for (value,) in self.db.execute("SELECT value FROM spool ORDER BY seq")]

    def close(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
        self.db.close()


STORES: dict[str, tuple[Callable[[Path], Any], str]] = {
    "frames": (Spool, SPOOL_FILE),
    "sqlite-wal": (SqliteSpool, "spool.sqlite"),
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def measure(name: str, records: int, batch: int, record: SpoolRecord) -> dict[str, Any]:
    opener, file_name = STORES[name]
    result: dict[str, Any] = {"store": name, "batch": batch}
    with tempfile.TemporaryDirectory(prefix="bench-spool-store-") as root:
        directory = Path(root)
        store = opener(directory)
        latencies: list[float] = []
        started = time.perf_counter()
        for _ in range(records // batch):
            before = time.perf_counter()
            store.append([record] * batch)
            latencies.append(time.perf_counter() - before)
        elapsed = time.perf_counter() - started
        result["append_records_per_s"] = round(records / elapsed)
        result["append_p50_ms"] = round(statistics.median(latencies) * 1000, 3)
        result["append_p99_ms"] = round(percentile(latencies, 0.99) * 1000, 3)
        store.close()
        result["file_bytes"] = (directory / file_name).stat().st_size
        started = time.perf_counter()
        store = opener(directory)
        result["open_ms"] = round((time.perf_counter() - started) * 1000, 1)
        started = time.perf_counter()
        drained = 0
        while True:
            chunk, offset = store.read(5000)
            if not chunk:
                break
            store.commit(offset)
            drained += len(chunk)
        result["drain_records_per_s"] = round(drained / (time.perf_counter() - started))
        store.close()
    return result


DAMAGE = {
    "a byte mid-file": lambda size: size // 2,
    "the first byte of a 4 KiB page mid-file": lambda size: size // 2 // 4096 * 4096,
}


def damage(name: str, where: str, records: int, record: SpoolRecord) -> dict[str, Any]:
    """Flip one byte of a full spool; count the records still readable and still intact."""
    opener, file_name = STORES[name]
    with tempfile.TemporaryDirectory(prefix="bench-spool-damage-") as root:
        directory = Path(root)
        store = opener(directory)
        store.append([record] * records)
        store.close()
        path = directory / file_name
        data = bytearray(path.read_bytes())
        data[DAMAGE[where](len(data))] ^= 0x55
        path.write_bytes(bytes(data))
        try:
            store = opener(directory)
            values = ([r.value for r in store.read(10**9)[0]] if isinstance(store, Spool)
                      else store.values())
            store.close()
            intact = sum(value == record.value for value in values)
            outcome = f"{len(values)} of {records} readable, {intact} intact"
        except (sqlite3.DatabaseError, OSError) as error:
            outcome = f"open/read failed: {type(error).__name__}: {error}"
        quarantined = len(list(directory.glob("quarantine-*")))
    return {"store": name, "damage": f"flipped {where}", "outcome": outcome,
            "quarantine_files": quarantined}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--single-appends", type=int, default=2_000,
                        help="appends of one record each (one fsync each)")
    args = parser.parse_args()
    record = sample_record()
    results = []
    for name in STORES:
        results.append(measure(name, args.single_appends, 1, record))
        results.append(measure(name, args.records, 1000, record))
    damaged = [damage(name, where, args.records, record) for where in DAMAGE for name in STORES]
    print(json.dumps({"record_bytes": len(record.value), "records": args.records,
                      "cpu_count": os.cpu_count(), "results": results, "damage": damaged},
                     indent=2))
    print()
    print("| store | batch | append records/s | append p50 / p99 (ms) | open (ms) "
          "| drain records/s | file bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['store']} | {r['batch']} | {r['append_records_per_s']:,} | "
              f"{r['append_p50_ms']} / {r['append_p99_ms']} | {r['open_ms']} | "
              f"{r['drain_records_per_s']:,} | {r['file_bytes']:,} |")
    print()
    for d in damaged:
        print(f"- {d['store']}: {d['damage']}: {d['outcome']} "
              f"({d['quarantine_files']} quarantine file)")


if __name__ == "__main__":
    main()
