"""DemoReport: what the demo prints at the end, and the reconciliation that must match exactly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import asyncpg
from rich.console import Console
from rich.table import Table

from ops.demo.runner import DemoResult
from projections.storage import count_since
from readmodels import ReadModels
from readmodels.reports import TOTAL_FIELDS, key_totals, spend_report

_FIELDS = TOTAL_FIELDS

@dataclass(frozen=True)
class Reconciliation:
    emitted: dict[str, int | Decimal]
    records: dict[str, int | Decimal]
    summaries: dict[str, int | Decimal]

    @property
    def matches(self) -> bool:
        return self.emitted == self.records == self.summaries


async def reconcile(dsn: str, result: DemoResult) -> Reconciliation:
    expected = result.generator.expected
    emitted: dict[str, int | Decimal] = {
        "requests": expected.requests, "errors": expected.errors,
        "prompt_tokens": expected.prompt_tokens, "completion_tokens": expected.completion_tokens,
        "cost_usd": expected.cost_usd, "unpriced": expected.unpriced,
    }
    ids = [key.id for key in result.keys]
    conn = await asyncpg.connect(dsn)
    try:
        records = await key_totals(conn, ids, source="records")
        summaries = await key_totals(conn, ids, source="summaries")
    finally:
        await conn.close()
    return Reconciliation(emitted, records, summaries)


async def print_report(console: Console, dsn: str, result: DemoResult) -> Reconciliation:
    conn = await asyncpg.connect(dsn)
    try:
        months = sorted(result.generator.expected.by_month)
        for month in months:
            first = date.fromisoformat(f"{month}-01")
            keys = await spend_report(conn, month=first, by="key", top=5)
            models = await spend_report(conn, month=first, by="model", top=5)
            table = Table(title=f"spend {month}: top keys and models")
            for column in ("key", "USD", "model", "USD "):
                table.add_column(column, justify="right" if "USD" in column else "left")
            for index in range(max(len(keys), len(models))):
                k = keys[index] if index < len(keys) else None
                m = models[index] if index < len(models) else None
                table.add_row(k.name or k.label if k else "", f"{k.cost_usd:.6f}" if k else "",
                              m.label if m else "", f"{m.cost_usd:.6f}" if m else "")
            console.print(table)
        dead = await count_since(conn, result.started_at)
    finally:
        await conn.close()
    reasons = ", ".join(f"{kind} {n}" for kind, n in dead)
    console.print(f"dead letters this run: {sum(n for _, n in dead)} ({reasons}); "
                  f"poison sent: {result.poison}")

    async with ReadModels.open(dsn) as rm:
        table = Table(title="authorize() for the keys revoked mid-stream")
        for column in ("key", "allowed", "reason"):
            table.add_column(column)
        for key in result.revoked:
            decision = await rm.keys.authorize(key.plaintext, result.generator.models[0])
            table.add_row(key.event.name, str(decision.allowed), str(decision.reason))
        console.print(table)

    caches = Table(title="read-model caches during the run")
    for column in ("cache", "hits", "misses", "hit rate", "size", "invalidated", "cleared"):
        caches.add_column(column, justify="right" if column != "cache" else "left")
    for name, stats in result.cache_stats.items():
        caches.add_row(name, f"{stats.hits:,}", f"{stats.misses:,}", f"{stats.hit_rate:.2%}",
                       f"{stats.size:,}", f"{stats.invalidations:,}", f"{stats.clears:,}")
    console.print(caches)
    usage_events = result.generator.expected.requests
    console.print(
        f"throughput: emitted {usage_events:,} usage events in "
        f"{result.emit_seconds:.1f}s ({usage_events / result.emit_seconds:,.0f}/s); "
        f"projected {result.emitted_messages:,} messages (with {result.duplicates:,} "
        f"duplicates and {result.poison} poison) {result.project_seconds:.1f}s after the first "
        f"emit ({result.emitted_messages / result.project_seconds:,.0f}/s); "
        f"{result.authorize_calls:,} authorize() calls; total {result.total_seconds:.1f}s")

    outcome = await reconcile(dsn, result)
    table = Table(title="reconciliation (this run's keys)")
    for column in ("", "emitted", "usage_records", "monthly_usage_summaries"):
        table.add_column(column, justify="right" if column else "left")
    for name in _FIELDS:
        table.add_row(name, str(outcome.emitted[name]), str(outcome.records[name]),
                      str(outcome.summaries[name]))
    console.print(table)
    console.print("[bold green]reconciliation: MATCH[/]" if outcome.matches
                  else "[bold red]reconciliation: MISMATCH[/]")
    return outcome
