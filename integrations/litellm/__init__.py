"""LiteLLM proxy integration (``pip install 'usage-ledger[litellm]'``); docs/litellm.md.

``config.yaml`` of the proxy::

    litellm_settings:
      callbacks: integrations.litellm.ledger_callback
    general_settings:
      master_key: os.environ/LITELLM_MASTER_KEY
      custom_auth: integrations.litellm.user_api_key_auth
"""

from __future__ import annotations

from integrations.litellm.auth import REASON_FIELD, LedgerAuth, ledger_auth, user_api_key_auth
from integrations.litellm.budget import estimate_cost, prompt_token_bound
from integrations.litellm.callback import LedgerCallback, ledger_callback
from integrations.litellm.mapping import ANONYMOUS_KEY_ID, HOLD_FIELD, KEY_ID_FIELD, usage_fields

__all__ = [
    "ANONYMOUS_KEY_ID",
    "HOLD_FIELD",
    "KEY_ID_FIELD",
    "REASON_FIELD",
    "LedgerAuth",
    "LedgerCallback",
    "estimate_cost",
    "ledger_auth",
    "ledger_callback",
    "prompt_token_bound",
    "usage_fields",
    "user_api_key_auth",
]
