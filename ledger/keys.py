"""API key material: the one place that turns a plaintext key into its stored hash.

Plaintext keys are shown to their owner once and never stored, logged or put in an
event; everything downstream only ever sees ``hash_key(plaintext)``.
"""

from __future__ import annotations

import hashlib
import re
import secrets

DEFAULT_KEY_PREFIX = "sk-led-"

# 32 random bytes = 256 bits of entropy, the same as the hash output, so the hash is
# never the weaker link.
_KEY_ENTROPY_BYTES = 32

KEY_HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def hash_key(plaintext: str) -> str:
    """Return the lowercase SHA-256 hex digest of ``plaintext`` (its UTF-8 bytes)."""
    if not plaintext:
        # An empty key would hash to a well-known constant that anyone could present.
        raise ValueError("cannot hash an empty API key")
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def generate_key(prefix: str = DEFAULT_KEY_PREFIX) -> str:
    """Return a new random plaintext API key; show it once, store only ``hash_key`` of it."""
    return prefix + secrets.token_urlsafe(_KEY_ENTROPY_BYTES)


def is_key_hash(value: str) -> bool:
    """Whether ``value`` has the shape of a ``hash_key`` result (64 lowercase hex digits)."""
    return KEY_HASH_PATTERN.fullmatch(value) is not None
