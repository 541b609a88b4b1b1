"""LiteLLM runs offline here: its bundled price map, never the remote one (set before import)."""

from __future__ import annotations

import os

from tests.readmodels.conftest import writer  # noqa: F401  (the fixture, shared)

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ.setdefault("LITELLM_TELEMETRY", "False")


