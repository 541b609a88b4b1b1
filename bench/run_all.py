"""Run every benchmark (producer, projector, rebuild, read models, LiteLLM, budgets); rewrite
docs/benchmarks.md.

    .venv/bin/python bench/run_all.py            # or: make bench
    .venv/bin/python bench/run_all.py --only litellm   # rerun one, keep the others' record

Each benchmark runs as its own process against its own embedded servers (or DATABASE_URL /
KAFKA_BOOTSTRAP_SERVERS when set). The page records the figures, the targets, the machine
(cores, memory, CPU) and the date, and keeps each script's full output below the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
README = ROOT / "README.md"
MARKERS = ("<!-- benchmark-table -->", "<!-- /benchmark-table -->")
RUNS = {
    "producer": ["bench/producer.py", "--events", "200000", "--repeat", "2"],
    "projector": ["bench/projector.py", "--events", "200000", "--baseline", "10000",
                  "--peer", "10000", "--rate", "25000", "--seconds", "10",
                  "--within-rate", "5000"],
    "rebuild": ["bench/rebuild.py", "--events", "200000", "--batch", "20000"],
    "readmodels": ["bench/readmodels.py", "--lookups", "1000000", "--trials", "200"],
    "litellm": ["bench/litellm_callback.py", "--calls", "20000", "--auth-calls", "20000"],
    "budgets": ["bench/budgets.py", "--calls", "200000", "--processes", "4",
                "--concurrency", "32"],
}


def run(name: str, argv: list[str]) -> tuple[str, float]:
    print(f"running {name}: {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout, time.perf_counter() - started


def first_json(text: str) -> dict[str, Any]:
    start = text.index("{")
    decoded, _ = json.JSONDecoder().raw_decode(text[start:])
    assert isinstance(decoded, dict)
    return decoded


def machine() -> str:
    memory = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = platform.processor() or "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{os.cpu_count()} cores ({cpu}), {memory} memory, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def grab(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    return found.group(1) if found else "?"


def summary(outputs: dict[str, str]) -> list[str]:
    producer = first_json(outputs["producer"])["results"]
    emit = [r for r in producer if r["phase"] == "emit"]
    built = [r for r in producer if r["phase"] != "emit" and "spool" not in r["phase"]]
    best = max(emit, key=lambda r: r["throughput_events_per_s"])
    projector = first_json(outputs["projector"])
    two_rss = projector["sustained_2_processes"]["worker_rss_mib"]
    rebuild = first_json(outputs["rebuild"])
    rm = outputs["readmodels"]
    cached_rate = grab(r"cached get_by_hash: ([\d,]+) lookups/s", rm)
    cached_p99 = grab(r"cached get_by_hash: .*?p99 ([\d.]+) us", rm)
    uncached_p50 = grab(r"uncached get_by_hash: p50 (\d+) us", rm)
    uncached_p99 = grab(r"uncached get_by_hash: .*?p99 (\d+) us", rm)
    revoke_p50 = grab(r"revocation.*?p50 ([\d.]+) ms", rm)
    revoke_p99 = grab(r"revocation.*?p99 ([\d.]+) ms", rm)
    built_rate = f"{built[0]['throughput_events_per_s']:,}" if built else "?"
    rows = [
        ("producer: emit p50 / p99 (prebuilt events)",
         f"{best['emit_p50_us']} / {best['emit_p99_us']} us", "p50 <= 20 us"),
        ("producer: throughput, one process (prebuilt / built per call)",
         f"{best['throughput_events_per_s']:,} / {built_rate} events/s",
         ">= 50,000 events/s"),
        ("projector: sustained, one worker (one process)",
         f"{projector['sustained']['events_per_s']:,} events/s", ">= 30,000 events/s"),
        ("projector: sustained, two worker processes",
         f"{projector['sustained_2_processes']['events_per_s']:,} events/s",
         ">= 50,000 events/s"),
        ("projector: naive baseline (1 transaction per event); 2 workers vs it",
         f"{projector['baseline']['events_per_s']:,} events/s; "
         f"{projector['ratios']['2_workers_vs_baseline']}x", ">= 40x"),
        ("projector: peer, eventsourcing tracking-record projection; 2 workers vs it",
         f"{projector['peer']['events_per_s']:,} events/s; "
         f"{projector['ratios']['2_workers_vs_peer']}x", "-"),
        (f"projector: emit-to-queryable lag at {projector['lag']['offered_per_s']:,}/s offered"
         " (one worker process)",
         f"p50 {projector['lag']['p50_ms']} ms, p99 {projector['lag']['p99_ms']} ms; "
         f"{projector['lag']['queryable']:,} of {projector['lag']['events']:,} queryable "
         "within 60 s of the last emit",
         "p99 <= 1 s at 25,000/s"),
        *([(f"projector: the same at {within['offered_per_s']:,}/s offered, a rate one worker "
            "sustains", f"p50 {within['p50_ms']} ms, p99 {within['p99_ms']} ms; "
            f"{within['queryable']:,} of {within['events']:,} queryable", "-")]
          if (within := projector.get("lag_within_capacity")) else []),
        ("projector: two worker processes' larger resident set, first / last sample",
         f"{two_rss['first']} / {two_rss['last']} MiB over "
         f"{projector['sustained_2_processes']['events']:,} events", "flat over 10M events"),
        ("rebuild usage: replay (whole rebuild with index builds and swap)",
         f"{rebuild['replay_events_per_s']:,} events/s "
         f"({rebuild['whole_rebuild_events_per_s']:,}/s over {rebuild['events']:,} events)",
         ">= 100,000 events/s"),
        ("read models: cached get_by_hash",
         f"{cached_rate} lookups/s, p99 {cached_p99} us",
         ">= 500,000/s, p99 <= 10 us"),
        ("read models: uncached get_by_hash",
         f"p50 {uncached_p50} us, p99 {uncached_p99} us", "-"),
        ("read models: Zipf hit rate (2,000 keys, 500 models)",
         grab(r"overall ([\d.]+%)", rm), ">= 99%"),
        ("read models: revocation seen by another process",
         f"p50 {revoke_p50} ms, p99 {revoke_p99} ms", "p99 <= 500 ms"),
        *litellm_rows(outputs.get("litellm")),
        *budget_rows(outputs.get("budgets")),
    ]
    lines = ["| measure | measured | target |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines


def budget_rows(output: str | None) -> list[tuple[str, str, str]]:
    if output is None:
        return []
    budgets = first_json(output)
    far, near = budgets["leases"]["far_from_cap"], budgets["leases"]["near_cap"]
    single = budgets["per_request"]["far_from_cap"]
    procs = budgets["processes"]
    return [
        ("budgets: authorize with estimate, far from the cap (leases)",
         f"p50 {far['p50_us']} us, p99 {far['p99_us']} us", "p50 <= 20 us, p99 <= 200 us"),
        ("budgets: the same near the cap / per-request reservation",
         f"p99 {near['p99_us']} us / p50 {single['p50_us']} us, p99 {single['p99_us']} us",
         "-"),
        (f"budgets: {procs['processes']} processes x {procs['concurrency']} concurrent",
         f"{procs['reservations_per_s']:,} reservations/s; overspend {procs['overspend_usd']} "
         f"USD, stranded {procs['stranded_usd']} USD",
         f"overspend 0, stranded <= {procs['largest_estimate_usd']} USD"),
        ("budgets: usage batch with / without the budget work (every key capped)",
         f"{budgets['projector']['with_budgets_events_per_s']:,} / "
         f"{budgets['projector']['without_events_per_s']:,} events/s "
         f"(+{budgets['projector']['budget_overhead_pct']}%)", "-"),
    ]


def litellm_rows(output: str | None) -> list[tuple[str, str, str]]:
    if output is None:
        return []
    found = first_json(output)
    callback, auth = found["callback"], found["auth_warm"]
    speed = (f" (machine: sum(range(1000)) {found['calibration_sum_range_1000_us']} us, "
             f"load {found['load_average'][0]:.1f})")
    return [
        ("LiteLLM: callback on LiteLLM's path (validating and emitting in its own task), "
         "p50 / p99" + speed, f"{callback['p50_us']} / {callback['p99_us']} us", "p50 <= 50 us"),
        ("LiteLLM: the process's CPU per call over the callback's run (every step, sending "
         "included; mean)", f"{callback['cpu_per_call_us']} us", "-"),
        ("LiteLLM: auth hook with a warm cache, p50 / p99",
         f"{auth['p50_us']} / {auth['p99_us']} us", "p99 <= 100 us"),
        ("LiteLLM: the same for keys with a budget (estimate held; keys at spread points of "
         "their leases), p50 / p99",
         f"{auth['with_budget']['p50_us']} / {auth['with_budget']['p99_us']} us",
         "p99 <= 100 us"),
        ("LiteLLM: keys with a budget whose leases all run low at once, p50 / p99",
         f"{auth['with_budget_leases_in_step']['p50_us']} / "
         f"{auth['with_budget_leases_in_step']['p99_us']} us", "-"),
    ]


# A benchmark's section of the page: name, seconds, the script's output.
SECTION = re.compile(
    r"^## (\w+)\n\n`\.venv/bin/python [^`]*` \(([\d.]+) s(?:, run (.+? UTC) on [^\n]*)?\)"
    r"\n\n```\n(.*?)\n```",
    re.S | re.M)


def recorded() -> tuple[str, str, dict[str, str], dict[str, float], dict[str, str]]:
    """The last full run's date and machine, and each benchmark's output, time and date as
    the page keeps them (a section rerun alone keeps its own date)."""
    text = PAGE.read_text()
    date = re.search(r"^- date: (.+)$", text, re.M)
    host = re.search(r"^- machine: (.+)$", text, re.M)
    full_run = date.group(1) if date else "?"
    sections = list(SECTION.finditer(text))
    outputs = {m.group(1): m.group(4) for m in sections}
    seconds = {m.group(1): float(m.group(2)) for m in sections}
    dates = {m.group(1): m.group(3) or full_run for m in sections}
    return full_run, (host.group(1) if host else "?"), outputs, seconds, dates


def main() -> None:
    parser = argparse.ArgumentParser(description="run the benchmarks, rewrite the page")
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS),
                        help="rerun these; the others' figures stay as the page records them")
    only = parser.parse_args().only
    outputs: dict[str, str] = {}
    seconds: dict[str, float] = {}
    today = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    full_run, dates, host = today, dict.fromkeys(RUNS, today), machine()
    if only:
        full_run, host, outputs, seconds, dates = recorded()
        missing = set(RUNS) - set(outputs) - set(only)
        if missing:
            raise SystemExit(f"the page has no record of {', '.join(sorted(missing))}: "
                             "run them too")
    for name, argv in RUNS.items():
        if not only or name in only:
            outputs[name], seconds[name] = run(name, argv)
            dates[name] = today
    page = [
        "# Benchmarks",
        "",
        "Written by `bench/run_all.py` (`make bench`); do not edit by hand. Every figure below "
        "comes from the run recorded here (a benchmark rerun alone with `--only` gives its "
        "date in its section); medians and ratios are from that run.",
        "",
        f"- date: {full_run}",
        f"- machine: {host}",
        "- servers: embedded PostgreSQL 18 and the embedded Tansu broker (memory storage), "
        "started by each script on this machine",
        "",
        "## Summary",
        "",
        *summary(outputs),
        "",
    ]
    for name, argv in RUNS.items():
        when = "" if dates[name] == full_run else f", run {dates[name]} on {machine()}"
        page += [f"## {name}", "", f"`.venv/bin/python {' '.join(argv)}` "
                 f"({seconds[name]:.0f} s{when})", "", "```", outputs[name].rstrip(), "```", ""]
    PAGE.write_text("\n".join(page))
    reruns = ", ".join(f"{name} rows: {dates[name]}" for name in RUNS
                       if dates[name] != full_run)
    table = "\n".join([f"Measured {full_run} on {host}" + (f" ({reruns})" if reruns else "")
                        + ":", "", *summary(outputs)])
    update_readme(table)
    print(f"wrote {PAGE.relative_to(ROOT)} and the table in README.md")


def update_readme(table: str) -> None:
    """Replace what stands between the README's benchmark markers."""
    text = README.read_text()
    start, end = text.index(MARKERS[0]), text.index(MARKERS[1])
    README.write_text(text[: start + len(MARKERS[0])] + "\n" + table + "\n" + text[end:])


if __name__ == "__main__":
    main()
