"""The model catalog: BerriAI's price map as typed, exact records.

Pure code only (no Kafka, no Postgres): the import command and the projector call into it.
"""

from __future__ import annotations

from ledger.catalog.berriai import (
    SAMPLE_SPEC,
    SNAPSHOT_LITELLM_VERSION,
    CatalogDiff,
    ProviderInfo,
    aliases_from_price_map,
    diff_catalog,
    load_price_map,
    load_snapshot,
    providers_from_price_map,
    resolve_model_name,
    snapshot_path,
)
from ledger.catalog.record import (
    COMMON_FEATURES,
    TYPED_PRICE_FIELDS,
    ModelRecord,
    PriceTier,
    to_price,
)

__all__ = [
    "COMMON_FEATURES",
    "SAMPLE_SPEC",
    "SNAPSHOT_LITELLM_VERSION",
    "TYPED_PRICE_FIELDS",
    "CatalogDiff",
    "ModelRecord",
    "PriceTier",
    "ProviderInfo",
    "aliases_from_price_map",
    "diff_catalog",
    "load_price_map",
    "load_snapshot",
    "providers_from_price_map",
    "resolve_model_name",
    "snapshot_path",
    "to_price",
]
