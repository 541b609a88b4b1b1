"""Where an event goes on Kafka: its topic, its message key and its headers.

The producer writes with these and the projectors check what they read against them
(``projections.decoding``): one home for the routing rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.events import EVENT_CLASSES, EventBase, _default_of
from ledger.settings import Settings

# Precomputed per class so the producer's hot path does no string formatting. Shared
# tuples, never handed out for mutation (event_headers returns a copy).
HEADERS_BY_CLASS: dict[type[EventBase], tuple[tuple[str, bytes], ...]] = {
    cls: (
        ("type", _default_of(cls, "type").encode()),
        ("schema_version", str(_default_of(cls, "schema_version")).encode()),
    )
    for cls in EVENT_CLASSES
}


def _default_topic(family: str) -> str:
    """A family's default topic name, as ``Settings`` declares it (written only there)."""
    default = Settings.model_fields[f"topic_{family}"].default
    assert isinstance(default, str)
    return default


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names by family, as ``Settings.topic_usage``, ``topic_keys`` ... name them."""

    usage: str = _default_topic("usage")
    keys: str = _default_topic("keys")
    catalog: str = _default_topic("catalog")
    alerts: str = _default_topic("alerts")

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        """The one construction from settings (TOPIC_USAGE, _KEYS, _CATALOG, _ALERTS)."""
        return cls(usage=settings.topic_usage, keys=settings.topic_keys,
                   catalog=settings.topic_catalog, alerts=settings.topic_alerts)


def topic_for(event: EventBase, topics: Topics) -> str:
    """The topic ``event`` is published to."""
    topic: str = getattr(topics, event.topic_family)
    return topic


def partition_key(event: EventBase) -> bytes:
    """The Kafka message key: api_key_id for usage/key events, the name for catalog ones."""
    return event.partition_key().encode()


def event_headers(event: EventBase) -> list[tuple[str, bytes]]:
    """Kafka headers ``type`` and ``schema_version`` (so routers need not parse the body)."""
    return list(HEADERS_BY_CLASS[type(event)])
