"""The projections by name."""

from __future__ import annotations

from projections.base import Projection
from projections.catalog import CatalogProjection
from projections.exceptions import UnknownProjectionError
from projections.keys import KeysProjection
from projections.usage import UsageProjection

PROJECTION_NAMES = ("usage", "keys", "catalog")


def make_projection(name: str) -> Projection:
    if name == "usage":
        return UsageProjection()
    if name == "keys":
        return KeysProjection()
    if name == "catalog":
        return CatalogProjection()
    raise UnknownProjectionError(
        f"unknown projection {name!r}; choose from {', '.join(PROJECTION_NAMES)}")
