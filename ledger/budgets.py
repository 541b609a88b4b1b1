"""Budgets as the contract sees them: scopes, periods, their boundaries, and hold ids.

Shared by the builders (which refuse bad input naming the field), the read models (which
need the current period's start on the hot path) and the projections (whose SQL function
``budget_period_start`` in migrations/0006_budgets.sql computes the same boundaries).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Final, get_args
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ledger.events import BudgetPeriod
from ledger.fields import MAX_ALERT_PERCENT, MAX_USD

PERIODS: Final[tuple[str, ...]] = get_args(BudgetPeriod)
DEFAULT_THRESHOLDS: Final = (50, 80, 100)
# The start of the one ``total`` period: it never resets (the SQL function says the same).
TOTAL_START: Final = datetime(1970, 1, 1, tzinfo=UTC)
KEY_PREFIX, OWNER_PREFIX = "key:", "owner:"


class BudgetInputError(ValueError):
    """Bad budget input; the message starts with the field it is about."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def key_scope(api_key_id: UUID | str) -> str:
    return f"{KEY_PREFIX}{UUID(str(api_key_id))}"


def owner_scope(owner: str) -> str:
    return f"{OWNER_PREFIX}{owner}"


def parse_scope(scope: str) -> tuple[str, str]:
    """``("key", "<uuid>")`` or ``("owner", "<name>")``; BudgetInputError otherwise."""
    if scope.startswith(KEY_PREFIX):
        try:
            return "key", str(UUID(scope.removeprefix(KEY_PREFIX)))
        except ValueError:
            raise BudgetInputError("scope", f"{scope!r}: key:<api_key_id> needs a UUID") from None
    if scope.startswith(OWNER_PREFIX) and scope.removeprefix(OWNER_PREFIX).strip():
        return "owner", scope.removeprefix(OWNER_PREFIX)
    raise BudgetInputError("scope", f"{scope!r} is neither key:<api_key_id> nor owner:<name>")


def canonical_scope(scope: str) -> str:
    kind, value = parse_scope(scope)
    return f"{kind}:{value}"


def check_limit(value: Decimal | str | int) -> Decimal:
    try:
        limit = Decimal(str(value))
    except InvalidOperation:
        raise BudgetInputError("limit_usd", f"{value!r} is not a number") from None
    if not limit.is_finite() or limit <= 0:
        raise BudgetInputError("limit_usd", f"must be greater than 0, got {value}")
    if limit > MAX_USD:
        raise BudgetInputError("limit_usd", f"must be at most {MAX_USD}, got {value}")
    return limit


def check_period(period: str) -> str:
    if period not in PERIODS:
        raise BudgetInputError("period", f"{period!r} is not one of {', '.join(PERIODS)}")
    return period


@cache
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; BudgetInputError("timezone", ...) for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BudgetInputError("timezone", f"{name!r} is not an IANA time zone") from None


def check_thresholds(values: list[int] | tuple[int, ...]) -> list[int]:
    if not values:
        raise BudgetInputError("alert_thresholds", "give at least one percent")
    for value in values:
        if not 1 <= value <= MAX_ALERT_PERCENT:
            raise BudgetInputError(
                "alert_thresholds", f"{value} is not a percent from 1 to {MAX_ALERT_PERCENT}")
    return sorted(set(values))


def period_start(moment: datetime, period: str, timezone: str) -> datetime:
    """The start of the calendar period holding ``moment`` in ``timezone`` (aware, UTC)."""
    if period == "total":
        return TOTAL_START
    local = moment.astimezone(zone(timezone))
    if period == "day":
        start = local.date()
    elif period == "week":  # ISO weeks start on Monday, as PostgreSQL's date_trunc('week')
        start = local.date() - timedelta(days=local.weekday())
    elif period == "month":
        start = local.date().replace(day=1)
    else:
        raise BudgetInputError("period", f"{period!r} is not one of {', '.join(PERIODS)}")
    return datetime(start.year, start.month, start.day, tzinfo=zone(timezone)).astimezone(UTC)


def next_reset(start: datetime, period: str, timezone: str) -> datetime | None:
    """When the period starting at ``start`` ends; None for ``total``."""
    if period == "total":
        return None
    local = start.astimezone(zone(timezone)).date()
    if period == "day":
        following = local + timedelta(days=1)
    elif period == "week":
        following = local + timedelta(days=7)
    else:
        following = (local.replace(day=28) + timedelta(days=4)).replace(day=1)
    return datetime(following.year, following.month, following.day,
                    tzinfo=zone(timezone)).astimezone(UTC)


# -- hold ids ---------------------------------------------------------------------------------
# A hold is handed out from per-process leases without a database round trip, so its id
# carries what the projector needs to settle it: the estimate and the lease of each ceiling.
# "h1_<estimate>_<lease hex>[_<lease hex>...]"

_HOLD = re.compile(r"h1_([0-9]+(?:\.[0-9]+)?)((?:_[0-9a-f]{32})+)")


def hold_id(estimate: Decimal, leases: list[UUID]) -> str:
    return f"h1_{estimate:f}" + "".join(f"_{lease.hex}" for lease in leases)


def parse_hold_id(text: str) -> tuple[Decimal, list[UUID]] | None:
    """(estimate, lease ids) of a hold id, or None when it is not one."""
    match = _HOLD.fullmatch(text)
    if match is None:
        return None
    leases = [UUID(part) for part in match.group(2).split("_")[1:]]
    return Decimal(match.group(1)), leases
