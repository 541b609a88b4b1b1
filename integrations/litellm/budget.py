"""The seam for budget reservations (the budget issue has not landed yet).

When it lands, the ledger will hold a per-key reservation while a call is in flight, so
that concurrent calls cannot overshoot a budget. The LiteLLM adapter is ready for it: the
auth hook computes an exact estimate (the request's ``max_tokens`` at the model's output
price, plus any prompt tokens it knows, priced by ``ledger.pricing``) and calls
``reserve``; the callback calls ``settle`` with the call's request id once the call is
recorded. Until an implementation is passed in, nothing is reserved and ``authorize``'s
month-to-date check is the only budget check (the cost of calls in flight is not counted).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol
from uuid import UUID

from ledger.catalog import ModelRecord
from ledger.pricing import Usage, price
from readmodels import Model

# Where the auth hook leaves the reservation's id for the callback (UserAPIKeyAuth.metadata).
RESERVATION_FIELD = "ledger_reservation_id"


class BudgetReservations(Protocol):
    """What the budget implementation must offer the adapter."""

    async def reserve(self, key_id: UUID, reservation_id: str, estimate_usd: Decimal) -> bool:
        """Hold ``estimate_usd`` against the key's budget; False refuses the call."""
        ...

    async def settle(self, key_id: UUID, reservation_id: str) -> None:
        """Release the hold: the call's recorded usage now counts instead."""
        ...


def estimate_cost(model: Model, max_tokens: int, prompt_tokens: int = 0) -> Decimal | None:
    """The most the call can cost at the model's standard prices, exactly; None when the
    catalog has no price for what it would bill."""
    record = ModelRecord.from_berriai(
        model.name, {**model.prices, "litellm_provider": model.provider, "mode": model.mode})
    breakdown = price(record, Usage(prompt_tokens=max(prompt_tokens, 0),
                                    completion_tokens=max(max_tokens, 0)))
    return None if breakdown.unpriced else breakdown.total
