"""Checking a webhook that Atelier sent, in the receiver, with nothing but the standard library.

Atelier signs the Standard Webhooks way (https://www.standardwebhooks.com): the headers
``webhook-id``, ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``, a space-separated
list of ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the base64 after
``whsec_`` of the tenant's secret (``Atelier().webhook_secret().secret``). For a day after a
rotation every delivery carries a second signature made with the previous secret, so either
secret verifies it.

    payload = verify(secret, request.headers, raw_body)   # WebhookVerificationError if not genuine
    if seen(request.headers["webhook-id"]):                 # the same id on every retry: at least once
        return 200

Verify the raw bytes as they arrived, before any JSON parsing: a re-serialised body does not match.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from atelier_client.errors import WebhookVerificationError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
SIGNATURE_VERSION = "v1"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
DEFAULT_TOLERANCE_S = 300.0  # as the Standard Webhooks libraries: 5 minutes either way

__all__ = ["DEFAULT_TOLERANCE_S", "WebhookVerificationError", "signing_key", "verify"]


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional); ValueError if it is not one."""
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the webhook secret is not whsec_ followed by base64") from exc
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def _signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` signatures of a ``webhook-signature`` header (other versions and junk skipped)."""
    found = []
    for entry in header.split():
        version, sep, encoded = entry.partition(",")
        if not sep or version != SIGNATURE_VERSION:
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> Any:
    """Check a delivery's signature and timestamp; its body, parsed from JSON, when it is genuine.

    ``headers`` may be any mapping (header names in any case); ``body`` the raw bytes as received.
    Raises WebhookVerificationError when a header is missing, no ``v1`` signature matches (compared in
    constant time), or the timestamp is more than ``tolerance_s`` seconds from ``now`` (default: the
    clock), which stops a captured delivery from being replayed later. ValueError for a malformed secret.
    """
    key = signing_key(secret)
    named = {str(name).lower(): str(value) for name, value in headers.items()}
    msg_id, stamp, signature = (named.get(h, "").strip() for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
    if not (msg_id and stamp and signature):
        raise WebhookVerificationError(f"missing {ID_HEADER}, {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    if not (stamp.isascii() and stamp.isdigit()):
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is not Unix seconds: {stamp[:40]!r}")
    skew = (time.time() if now is None else now) - int(stamp)
    if skew > tolerance_s:
        raise WebhookVerificationError(f"the message is too old ({skew:.0f} s; tolerance {tolerance_s:g} s)")
    if skew < -tolerance_s:
        raise WebhookVerificationError(f"the message is from the future ({-skew:.0f} s; tolerance {tolerance_s:g} s)")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    expected = hmac.new(key, msg_id.encode() + b"." + stamp.encode() + b"." + raw, hashlib.sha256).digest()
    matched = False
    for candidate in _signatures(signature):
        matched |= hmac.compare_digest(expected, candidate)  # every one compared: no early exit to time
    if not matched:
        raise WebhookVerificationError("no signature matches the body")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise WebhookVerificationError("the signed body is not JSON") from exc
