"""An independent check of AWS SigV4 presigned GET URLs, as S3 does it: the signature over the
canonical request, and the expiry (X-Amz-Date + X-Amz-Expires).

moto's S3 server does not check presigned query signatures or their expiry, and MinIO is not
installable here, so tests that must show a URL stop working ask this instead, built from the
AWS specification rather than from the SDK that signed the URL."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_EXPIRES_S = 7 * 24 * 3600


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def refusal(url: str, *, secret_key: str, now: datetime | None = None) -> str | None:
    """Why S3 would refuse this presigned GET now ('expired', 'signature', 'malformed'), or None."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(query)
    try:
        signature = params["X-Amz-Signature"]
        amz_date = params["X-Amz-Date"]
        expires_s = int(params["X-Amz-Expires"])
        credential = params["X-Amz-Credential"]
        signed_headers = params["X-Amz-SignedHeaders"]
        issued = datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
        _access_key, day, region, service, _terminator = credential.split("/")
    except (KeyError, ValueError):
        return "malformed"
    if params.get("X-Amz-Algorithm") != ALGORITHM or signed_headers != "host" or not 1 <= expires_s <= MAX_EXPIRES_S:
        return "malformed"
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query) if k != "X-Amz-Signature"
    )
    canonical_request = "\n".join(
        ["GET", quote(parts.path, safe="/-_.~"), canonical_query, f"host:{parts.netloc}\n", "host", UNSIGNED_PAYLOAD]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service), "aws4_request")
    if not hmac.compare_digest(hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest(), signature):
        return "signature"
    if (now or datetime.now(UTC)) > issued + timedelta(seconds=expires_s):
        return "expired"
    return None
