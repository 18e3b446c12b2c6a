"""Webhooks: Standard Webhooks signing, the retry schedule, and the SSRF guard on target URLs.

No torch, no Celery, no database: the API checks a URL at submit with ``check_webhook_url``; the
``cpu`` worker (workers/webhooks.py) resolves it again before every attempt (``resolve_target``) and
connects to the address it checked, so a DNS answer that changes to a private address after the
check is never connected to.

Signing follows https://www.standardwebhooks.com: ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed by the
base64-decoded tenant secret (``whsec_<base64>``). For a day after a rotation the previous secret
signs too (a second, space-separated signature), so receivers can switch keys without losing events.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import SplitResult, urlsplit, urlunsplit

from shared.errors import InvalidInput

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
SECRET_BYTES = 32
SIGNATURE_VERSION = "v1"
MESSAGE_ID_PREFIX = "msg_"
USER_AGENT = "Atelier-Webhooks/1"
CONTENT_TYPE = "application/json"
PREVIOUS_SECRET_VALID = timedelta(hours=24)

# Seconds between attempts: 7 retries after the first try, about 1 h 53 min in all, then "failed".
RETRY_SCHEDULE_S: tuple[float, ...] = (5.0, 30.0, 120.0, 300.0, 900.0, 1800.0, 3600.0)
RETRY_JITTER = 0.2  # each wait is drawn from [1 - j, 1 + j] x its step, so receivers aren't hit in lockstep

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
DNS_TIMEOUT_S = 2.0
FIELD = "webhook"
ADDRESS_NOT_ALLOWED = "address not allowed"

# IPv6 prefixes that carry an IPv4 address a packet may end up at (RFC 6052 NAT64).
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
IPV4_BITS = 0xFFFFFFFF

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# --- signing ------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def message_id(delivery_id: uuid.UUID) -> str:
    """The ``webhook-id`` of a delivery: the same for every retry, so receivers can drop duplicates."""
    return f"{MESSAGE_ID_PREFIX}{delivery_id.hex}"


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`` keyed by the decoded secret."""
    digest = hmac.new(_key(secret), f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signing_secrets(current: str, *, previous: str | None, rotated_at: datetime | None, now: datetime) -> list[str]:
    """The secrets that sign now: the current one, and the previous one for a day after a rotation."""
    keys = [current]
    if previous and rotated_at is not None and now < rotated_at + PREVIOUS_SECRET_VALID:
        keys.append(previous)
    return keys


def headers(*, keys: list[str], msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The headers of one attempt: id, timestamp, one signature per signing secret, content type, user agent."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(key, msg_id, timestamp, body) for key in keys),
        "content-type": CONTENT_TYPE,
        "user-agent": USER_AGENT,
    }


# --- retries ------------------------------------------------------------------------------


def retry_delay_s(attempts_made: int, schedule: tuple[float, ...] = RETRY_SCHEDULE_S) -> float | None:
    """Seconds until the next try after ``attempts_made`` failed ones (with jitter); None when none is left."""
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    step = schedule[attempts_made - 1]
    return step * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)


# --- the SSRF guard -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where an attempt connects: ``url`` names a checked address (or an allowed host) and ``host``
    is what the Host header and TLS (SNI and certificate check) use."""

    url: str
    host: str
    host_header: str


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & IPV4_BITS)
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether a webhook may connect to ``ip``: globally routable unicast, nothing internal."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None and not is_public(embedded):
            return False
        if ip.is_site_local:
            return False
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def _resolve(host: str, port: int, *, timeout_s: float) -> list[IPAddress]:
    """Every address ``host`` resolves to, within ``timeout_s`` (getaddrinfo has no deadline of its own)."""
    found: list[IPAddress] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.extend(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos)
        except (OSError, UnicodeError, ValueError) as exc:
            failure.append(exc)

    thread = threading.Thread(target=lookup, name="webhook-dns", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise InvalidInput(f"{FIELD}: {host!r} did not resolve within {timeout_s:g} s", field=FIELD)
    if failure or not found:
        raise InvalidInput(f"{FIELD}: {host!r} does not resolve", field=FIELD)
    return list(dict.fromkeys(found))


def _parse(url: str) -> tuple[SplitResult, str, int]:
    """Scheme, host and port checks that need no DNS."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"{FIELD}: not a valid URL ({exc})", field=FIELD) from exc
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise InvalidInput(f"{FIELD}: the scheme must be http or https, not {parts.scheme!r}", field=FIELD)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidInput(f"{FIELD}: credentials in the URL are not allowed", field=FIELD)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidInput(f"{FIELD}: the URL has no host", field=FIELD)
    return parts, host, port or DEFAULT_PORTS[parts.scheme.lower()]


def _is_allowed_host(host: str, allowed_hosts: list[str]) -> bool:
    return host.lower() in {h.lower().strip("[]") for h in allowed_hosts}


def resolve_target(url: str, *, allowed_hosts: list[str], timeout_s: float = DNS_TIMEOUT_S) -> Target:
    """Check ``url`` and pick the checked address to connect to; InvalidInput (field ``webhook``) if refused.

    A host in ``allowed_hosts`` (exact name or IP) is used as it is. Any other host must resolve,
    within ``timeout_s``, to public addresses only; the target then names the first of them.
    """
    parts, host, port = _parse(url)
    netloc_host = parts.netloc.rsplit("@", 1)[-1]
    if _is_allowed_host(host, allowed_hosts):
        return Target(url=url, host=host, host_header=netloc_host)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    addresses = [literal] if literal is not None else _resolve(host, port, timeout_s=timeout_s)
    refused = [ip for ip in addresses if not is_public(ip)]
    if refused:
        raise InvalidInput(
            f"{FIELD}: {ADDRESS_NOT_ALLOWED}: {host!r} resolves to {refused[0]}, which is not a public address",
            field=FIELD,
        )
    chosen = addresses[0]
    literal_host = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    pinned = parts._replace(netloc=f"{literal_host}:{port}")
    return Target(url=urlunsplit(pinned), host=host, host_header=netloc_host)


def check_webhook_url(url: str, *, allowed_hosts: list[str], timeout_s: float = DNS_TIMEOUT_S) -> str:
    """The URL, if a webhook may be sent to it; else InvalidInput naming field ``webhook`` (a 422)."""
    resolve_target(url, allowed_hosts=allowed_hosts, timeout_s=timeout_s)
    return url
