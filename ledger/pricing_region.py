"""Where a request was served: the regional uplifts a model's entry lists.

Three inputs, as LiteLLM 1.110.2 prices them (docs/pricing.md, rule 12); each multiplies
the whole cost of the request, input and output side alike:

* ``data_residency`` (``us``, ``eu``, ``fedramp``): OpenAI's regional processing
  (``regional_processing_uplift_multiplier_us`` / ``_eu``) and its FedRAMP endpoint
  (``fedramp_uplift_multiplier``).
* ``vertex_location`` (a Vertex AI location such as ``us-east5``): every location but
  ``global`` costs ``regional_endpoint_uplift_multiplier``.
* ``inference_geo`` (Anthropic's ``usage.inference_geo``, e.g. ``us``): the multiplier
  under that geo in ``provider_specific_entry``, on the Anthropic and Bedrock paths only,
  never for a batch; ``global`` and ``not_available`` cost nothing extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from ledger.catalog.record import ModelRecord, to_price

__all__ = ["Uplift", "uplifts"]

_ONE = Decimal(1)
# The providers whose LiteLLM cost path applies the inference-geo multiplier.
_GEO_PROVIDERS = frozenset({"anthropic", "bedrock"})
_NO_GEO = frozenset({"global", "not_available"})


class Uplift(BaseModel):
    """One multiplier that applied: ``component`` names it in the breakdown."""

    model_config = ConfigDict(frozen=True)

    component: str
    multiplier: Decimal
    price_key: str


def _multiplier(source: Mapping[str, Any], key: str) -> Decimal | None:
    value = to_price(source.get(key))
    return None if value is None or value == _ONE else value


def uplifts(
    model: ModelRecord,
    *,
    data_residency: str | None,
    vertex_location: str | None,
    inference_geo: str | None,
    batch: bool,
) -> list[Uplift]:
    """The multipliers that apply, in the order LiteLLM applies them."""
    raw = model.raw
    found: list[Uplift] = []
    if data_residency is not None:
        residency = data_residency.lower()
        for key in (f"regional_processing_uplift_multiplier_{residency}",
                    "fedramp_uplift_multiplier" if residency == "fedramp" else None):  # fmt: skip
            if key is not None and (m := _multiplier(raw, key)) is not None:
                found.append(Uplift(component=f"data_residency_{residency}_uplift",
                                    multiplier=m, price_key=key))  # fmt: skip
    if vertex_location is not None and vertex_location.lower() != "global":
        key = "regional_endpoint_uplift_multiplier"
        if (m := _multiplier(raw, key)) is not None:
            found.append(Uplift(component="vertex_location_uplift", multiplier=m, price_key=key))
    entry = raw.get("provider_specific_entry")
    if (
        inference_geo is not None
        and not batch
        and model.provider in _GEO_PROVIDERS
        and inference_geo.lower() not in _NO_GEO
        and isinstance(entry, Mapping)
    ):
        geo = inference_geo.lower()
        if (m := _multiplier(entry, geo)) is not None:
            found.append(Uplift(component="inference_geo_uplift", multiplier=m,
                                price_key=f"provider_specific_entry.{geo}"))  # fmt: skip
    return found
