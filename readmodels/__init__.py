"""Cached read models for a gateway's hot path: ``from readmodels import ReadModels``.

    async with ReadModels.open(settings) as rm:
        decision = await rm.keys.authorize(plaintext_key, "gpt-4o")
"""

from __future__ import annotations

from readmodels.budgets import Alert, BudgetReader, BudgetRow, BudgetState, Ceiling
from readmodels.cache import CacheStats
from readmodels.exceptions import (
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    QueryError,
    ReadModelError,
    ReadModelsClosedError,
)
from readmodels.keys import ApiKey, Decision, KeyPage, KeyReader, Reason
from readmodels.metrics import register_metrics, unregister_metrics
from readmodels.models import Model, ModelMatch, ModelReader, Provider
from readmodels.readmodels import Health, PoolStats, ReadModels, Stats
from readmodels.usage import (
    MonthlySummary,
    MonthlyUsage,
    RecordPage,
    UsageCursor,
    UsageReader,
    UsageRecord,
    UsageTotals,
)

__all__ = [
    "Alert",
    "ApiKey",
    "BudgetReader",
    "BudgetRow",
    "BudgetState",
    "CacheStats",
    "Ceiling",
    "DatabaseTimeoutError",
    "DatabaseUnavailableError",
    "Decision",
    "Health",
    "InvalidArgumentError",
    "KeyPage",
    "KeyReader",
    "Model",
    "ModelMatch",
    "ModelReader",
    "MonthlySummary",
    "MonthlyUsage",
    "PoolStats",
    "Provider",
    "QueryError",
    "ReadModelError",
    "ReadModels",
    "ReadModelsClosedError",
    "Reason",
    "RecordPage",
    "Stats",
    "UsageCursor",
    "UsageReader",
    "UsageRecord",
    "UsageTotals",
    "register_metrics",
    "unregister_metrics",
]
