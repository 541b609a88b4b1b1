"""Off-peak prices: the time-of-day rule of the price map's ``off_peak_pricing`` block.

A block lists the rates that replace the standard ones while one of its windows is open,
and the windows themselves, as LiteLLM 1.110.2 reads them (``_is_off_peak``)::

    "off_peak_pricing": {
        "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
        "cache_read_input_token_cost": 3e-09,
        "hours_utc": "16:30-00:30",                       # every day, or a list of them
        "windows": [                                      # or per weekday (1 = Monday)
            {"hours_utc": ["00:00-01:00", "10:00-00:00"], "weekdays": [1, 2, 3, 4, 5]},
            {"hours_utc": "00:00-00:00", "weekdays": [6, 7]}],
        "weekday_timezone": "Asia/Shanghai"}              # the calendar of "weekdays"

* Hours are ``HH:MM-HH:MM`` in UTC; the start is inclusive, the end exclusive; a window
  may wrap past midnight, and one whose start equals its end is the whole day. Malformed
  windows are ignored.
* ``weekdays`` (numbers 1-7 or names, absent = every day) are read on the calendar of
  ``weekday_timezone`` (default UTC; an unknown zone is UTC, as in LiteLLM), while the
  hours stay UTC.
* The moment is the request's ``occurred_at``, never the clock of the machine pricing it,
  so a replay years later prices the same event the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

from ledger.catalog.record import to_price

__all__ = ["OffPeakPricing", "off_peak_block", "parsed_block"]

_WEEKDAYS: dict[str, int] = {
    "mon": 1, "monday": 1, "tue": 2, "tues": 2, "tuesday": 2, "wed": 3, "wednesday": 3,
    "thu": 4, "thur": 4, "thurs": 4, "thursday": 4, "fri": 5, "friday": 5,
    "sat": 6, "saturday": 6, "sun": 7, "sunday": 7,
}  # fmt: skip
# Rates a block may replace; anything else in it is ignored, as LiteLLM ignores it.
_RATE_KEYS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token",
)

_Window = tuple[time, time]


def _parse_window(text: object) -> _Window | None:
    if not isinstance(text, str) or text.count("-") != 1:
        return None
    start, end = text.split("-")
    try:
        return (
            datetime.strptime(start.strip(), "%H:%M").time(),
            datetime.strptime(end.strip(), "%H:%M").time(),
        )
    except ValueError:
        return None


def _windows(value: object) -> tuple[_Window, ...]:
    texts: Sequence[object] = (
        (value,) if isinstance(value, str) else value if isinstance(value, list | tuple) else ()
    )
    return tuple(w for w in map(_parse_window, texts) if w is not None)


def _weekday(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= 7 else None
    if isinstance(value, str):
        return _WEEKDAYS.get(value.strip().lower())
    return None


def _inside(windows: tuple[_Window, ...], moment: time) -> bool:
    for start, end in windows:
        if start < end:
            if start <= moment < end:
                return True
        elif moment >= start or moment < end:  # wraps past midnight, or the whole day
            return True
    return False


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True)

    windows: tuple[_Window, ...]
    weekdays: frozenset[int] | None  # None: every day


class OffPeakPricing(BaseModel):
    """A parsed ``off_peak_pricing`` block: its rates and when they apply."""

    model_config = ConfigDict(frozen=True)

    prices: dict[str, Decimal]
    every_day: tuple[_Window, ...] = ()
    rules: tuple[_Rule, ...] = ()
    weekday_timezone: str = "UTC"

    @classmethod
    def parse(cls, block: Mapping[str, object]) -> OffPeakPricing:
        prices = {
            key: price for key in _RATE_KEYS if (price := to_price(block.get(key))) is not None
        }
        rules: list[_Rule] = []
        raw_rules = block.get("windows")
        for raw in raw_rules if isinstance(raw_rules, list) else ():
            if not isinstance(raw, Mapping):
                continue
            windows = _windows(raw.get("hours_utc"))
            days = raw.get("weekdays")
            if not windows or isinstance(days, str):
                continue
            weekdays = (
                None
                if days is None
                else frozenset(d for d in map(_weekday, days) if d is not None)
                if isinstance(days, list | tuple)
                else frozenset()
            )
            rules.append(_Rule(windows=windows, weekdays=weekdays))
        zone = block.get("weekday_timezone")
        return cls(
            prices=prices,
            every_day=_windows(block.get("hours_utc")),
            rules=tuple(rules),
            weekday_timezone=zone.strip() if isinstance(zone, str) and zone.strip() else "UTC",
        )

    def _calendar(self) -> tzinfo:
        try:
            return ZoneInfo(self.weekday_timezone)
        except (ValueError, ZoneInfoNotFoundError):
            return UTC

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` falls in one of the block's windows (naive is UTC, as in LiteLLM)."""
        utc = at.astimezone(UTC) if at.tzinfo is not None else at.replace(tzinfo=UTC)
        if _inside(self.every_day, utc.time()):
            return True
        weekday = utc.astimezone(self._calendar()).isoweekday()
        return any(
            (rule.weekdays is None or weekday in rule.weekdays)
            and _inside(rule.windows, utc.time())
            for rule in self.rules
        )


def parsed_block(raw: Mapping[str, object]) -> OffPeakPricing | None:
    """The model's off-peak block, parsed; None when it has none."""
    block = raw.get("off_peak_pricing")
    return OffPeakPricing.parse(block) if isinstance(block, Mapping) else None


def off_peak_block(raw: Mapping[str, object], at: datetime | None) -> OffPeakPricing | None:
    """The model's off-peak block when ``at`` is inside one of its windows, else None."""
    if at is None:
        return None
    parsed = parsed_block(raw)
    return parsed if parsed is not None and parsed.is_open(at) else None
