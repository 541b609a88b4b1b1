"""Prometheus counters of the LiteLLM adapter, registered once per process."""

from __future__ import annotations

from prometheus_client import Counter

CALLBACK_EVENTS = Counter(
    "ledger_litellm_callback_events_total",
    "UsageRecorded events the LiteLLM callback handed to the producer, by status",
    ["status"],
)
CALLBACK_ERRORS = Counter(
    "ledger_litellm_callback_errors_total",
    "LiteLLM callbacks that failed inside the ledger (logged; the request was not affected)",
    ["stage"],
)
AUTH_DECISIONS = Counter(
    "ledger_litellm_auth_decisions_total",
    "custom_auth answers of the ledger's LiteLLM hook, by reason",
    ["reason"],
)
