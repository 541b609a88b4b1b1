"""LiteLLM proxy integration (``pip install 'usage-ledger[litellm]'``); docs/litellm.md.

``config.yaml`` of the proxy::

    litellm_settings:
      callbacks: integrations.litellm.ledger_callback
    general_settings:
      master_key: os.environ/LITELLM_MASTER_KEY
      custom_auth: integrations.litellm.user_api_key_auth
"""

from __future__ import annotations

from integrations.litellm.auth import LedgerAuth, ledger_auth, user_api_key_auth
from integrations.litellm.budget import BudgetReservations, estimate_cost
from integrations.litellm.callback import LedgerCallback, ledger_callback
from integrations.litellm.mapping import ANONYMOUS_KEY_ID, KEY_ID_FIELD, usage_fields

__all__ = [
    "ANONYMOUS_KEY_ID",
    "KEY_ID_FIELD",
    "BudgetReservations",
    "LedgerAuth",
    "LedgerCallback",
    "estimate_cost",
    "ledger_auth",
    "ledger_callback",
    "usage_fields",
    "user_api_key_auth",
]
