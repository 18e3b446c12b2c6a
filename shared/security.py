"""API keys: random bearer tokens of which only the SHA-256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "atl_"
KEY_RANDOM_BYTES = 32
DISPLAY_PREFIX_CHARS = 12


def new_api_key() -> str:
    """A fresh key: ``atl_`` + 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(key: str) -> str:
    """Hex SHA-256 of the key. Keys carry 256 bits of entropy, so no salt or KDF is needed."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """The part of a key that may be shown and logged."""
    return key[:DISPLAY_PREFIX_CHARS]


def verify_key(key: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return hmac.compare_digest(hash_key(key), stored_hash)
