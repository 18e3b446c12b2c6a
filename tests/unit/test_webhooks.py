"""shared/webhooks.py and workers/webhooks.py's HTTP attempt: Standard Webhooks signing (checked with
the standardwebhooks library's own verify), the retry schedule, the SSRF guard, and the hard deadline."""

from __future__ import annotations

import base64
import http.server
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared import webhooks
from shared.config import Settings
from shared.errors import InvalidInput
from shared.webhooks import (
    RETRY_JITTER,
    RETRY_SCHEDULE_S,
    check_webhook_url,
    headers,
    message_id,
    new_secret,
    resolve_target,
    retry_delay_s,
    sign,
    signing_secrets,
)
from workers import webhooks as worker_webhooks
from workers.webhooks import post

BODY = '{"type":"job.completed","data":{"job":{"id":"x"}}}'
HOUR_S = 3600.0
STALE_S = 6 * 60  # the library's tolerance is 5 minutes
LOOPBACK = ["127.0.0.1", "localhost"]


# --- signing -------------------------------------------------------------------------------


def test_a_new_secret_is_32_random_bytes_behind_the_prefix() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


def test_signature_matches_the_reference_implementation() -> None:
    # Given a secret, a message id and a timestamp
    secret, msg_id, ts = new_secret(), message_id(uuid.uuid4()), int(time.time())
    # Then our signature is the library's
    expected = Webhook(secret).sign(msg_id=msg_id, timestamp=datetime.fromtimestamp(ts, UTC), data=BODY)
    assert sign(secret, msg_id, ts, BODY) == expected


def test_headers_verify_and_tampering_fails() -> None:
    # Given the headers of one attempt
    secret = new_secret()
    sent = headers(keys=[secret], msg_id=message_id(uuid.uuid4()), timestamp=int(time.time()), body=BODY)
    assert sent["content-type"] == "application/json" and sent["user-agent"].startswith("Atelier")
    # Then the receiver's verify accepts the body as sent
    assert Webhook(secret).verify(BODY, sent) == {"type": "job.completed", "data": {"job": {"id": "x"}}}
    # And refuses a changed body, another secret, or a stale timestamp
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace("completed", "started"), sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, sent)
    stale = headers(keys=[secret], msg_id=sent["webhook-id"], timestamp=int(time.time()) - STALE_S, body=BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, stale)


def test_message_id_is_stable_per_delivery() -> None:
    delivery = uuid.uuid4()
    assert message_id(delivery) == message_id(delivery) == f"msg_{delivery.hex}"


def test_after_a_rotation_both_secrets_verify_for_a_day() -> None:
    # Given a rotation an hour ago
    old, new = new_secret(), new_secret()
    now = datetime.now(UTC)
    keys = signing_secrets(new, previous=old, rotated_at=now - timedelta(hours=1), now=now)
    sent = headers(keys=keys, msg_id="msg_1", timestamp=int(time.time()), body=BODY)
    # Then either secret verifies the delivery (two signatures, space-separated)
    assert len(sent["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, sent)
    Webhook(old).verify(BODY, sent)
    # And after 24 h only the new one signs
    later = now + timedelta(hours=24)
    assert signing_secrets(new, previous=old, rotated_at=now - timedelta(hours=1), now=later) == [new]
    assert signing_secrets(new, previous=None, rotated_at=None, now=now) == [new]


# --- retries -------------------------------------------------------------------------------


def test_the_retry_schedule_covers_at_least_an_hour_even_with_jitter() -> None:
    assert sum(RETRY_SCHEDULE_S) * (1 - RETRY_JITTER) >= HOUR_S
    assert list(RETRY_SCHEDULE_S) == sorted(RETRY_SCHEDULE_S)  # backs off
    delays = [retry_delay_s(n) for n in range(1, len(RETRY_SCHEDULE_S) + 1)]
    assert all(d is not None for d in delays)
    assert sum(d for d in delays if d is not None) >= HOUR_S
    for step, delay in zip(RETRY_SCHEDULE_S, delays, strict=True):
        assert delay is not None and step * (1 - RETRY_JITTER) <= delay <= step * (1 + RETRY_JITTER)
    # after the last wait's attempt there is none left: the delivery fails
    assert retry_delay_s(len(RETRY_SCHEDULE_S) + 1) is None
    assert retry_delay_s(3, (0.1, 0.1)) is None


def test_settings_read_hosts_and_schedule_as_json_and_refuse_a_zero_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_WEBHOOK_ALLOWED_HOSTS", '["127.0.0.1", "localhost"]')
    monkeypatch.setenv("ATELIER_WEBHOOK_RETRY_SCHEDULE_S", "[0.5, 1]")
    built = Settings()
    assert built.webhook_allowed_hosts == LOOPBACK
    assert built.webhook_retry_schedule_s == (0.5, 1.0)
    monkeypatch.delenv("ATELIER_WEBHOOK_ALLOWED_HOSTS")
    assert Settings().webhook_allowed_hosts == []  # no exception by default
    monkeypatch.setenv("ATELIER_WEBHOOK_RETRY_SCHEDULE_S", "[5, 0]")
    with pytest.raises(ValidationError, match="greater than 0"):
        Settings()


# --- the SSRF guard ------------------------------------------------------------------------

REFUSED = [
    "http://127.0.0.1/hook",
    "http://localhost:8080/hook",
    "http://2130706433/hook",  # 127.0.0.1 in decimal: checked after resolution
    "http://10.1.2.3/hook",
    "http://172.16.5.4/hook",
    "http://172.31.255.255/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://240.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://[fd12:3456::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[64:ff9b::a00:1]/hook",  # NAT64 of 10.0.0.1
    "http://[2002:a00:1::]/hook",  # 6to4 of 10.0.0.1
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "http://user:pw@8.8.8.8/hook",
    "http://user@8.8.8.8/hook",
    "http:///hook",
    "http://8.8.8.8:99999/hook",
    "http://host.invalid/hook",  # does not resolve
]

ALLOWED = [
    "http://8.8.8.8/hook",
    "https://1.1.1.1:8443/a/b?c=d",
    "https://[2606:4700:4700::1111]/hook",
]


@pytest.mark.parametrize("url", REFUSED)
def test_the_guard_refuses_internal_and_odd_urls(url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_webhook_url(url, allowed_hosts=[], timeout_s=1.0)
    assert refused.value.field == "webhook"
    assert refused.value.status_code == 422
    assert refused.value.message.startswith("webhook: ")


@pytest.mark.parametrize("url", ALLOWED)
def test_the_guard_lets_public_addresses_pass(url: str) -> None:
    assert check_webhook_url(url, allowed_hosts=[]) == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://LOCALHOST:80/x"])
def test_allowed_hosts_let_loopback_pass(url: str) -> None:
    assert check_webhook_url(url, allowed_hosts=LOOPBACK) == url


def test_allowed_hosts_are_exact_names() -> None:
    # 127.0.0.2 is loopback too, but only the names listed pass
    with pytest.raises(InvalidInput, match="address not allowed"):
        check_webhook_url("http://127.0.0.2/hook", allowed_hosts=LOOPBACK)
    assert check_webhook_url("http://[::1]/hook", allowed_hosts=["[::1]"]) == "http://[::1]/hook"


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]], delay_s: float = 0.0) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        time.sleep(delay_s)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", getaddrinfo)


def test_every_address_of_a_name_must_be_public(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a name with a public and a private address
    _fake_dns(monkeypatch, {"hooks.example.com": ["8.8.8.8", "10.0.0.7"], "ok.example.com": ["8.8.4.4"]})
    # Then it is refused, naming the private one
    with pytest.raises(InvalidInput, match=r"address not allowed.*10\.0\.0\.7"):
        check_webhook_url("https://hooks.example.com/x", allowed_hosts=[])
    # And a public-only name resolves to a target pinned to the checked address, keeping the name for Host and TLS
    target = resolve_target("https://ok.example.com:8443/x?y=1", allowed_hosts=[])
    assert target.url == "https://8.8.4.4:8443/x?y=1"
    assert (target.host, target.host_header) == ("ok.example.com", "ok.example.com:8443")


def test_a_rebind_to_a_private_address_is_refused_at_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a name that passed at submit
    _fake_dns(monkeypatch, {"hooks.example.com": ["8.8.8.8"]})
    check_webhook_url("http://hooks.example.com/x", allowed_hosts=[])
    # When its DNS answer changes to the metadata address
    _fake_dns(monkeypatch, {"hooks.example.com": ["169.254.169.254"]})
    # Then the check before the attempt refuses it
    with pytest.raises(InvalidInput, match="address not allowed"):
        resolve_target("http://hooks.example.com/x", allowed_hosts=[])


def test_a_slow_resolver_is_a_422_within_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, {"slow.example.com": ["8.8.8.8"]}, delay_s=3.0)
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="did not resolve within"):
        check_webhook_url("http://slow.example.com/x", allowed_hosts=[], timeout_s=0.3)
    assert time.monotonic() - started < 1.5


# --- one attempt's hard deadline -------------------------------------------------------------


class _Trickle(http.server.BaseHTTPRequestHandler):
    """Answers its head one byte every 0.2 s: each read is quick, the whole never ends in time."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *_: Any) -> None:
        """Quiet."""


class _Ok(_Trickle):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.server.seen = self.headers  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start HTTP servers on loopback (``wrap`` may turn a server's socket into TLS); all stop after the test."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(
        handler: type[http.server.BaseHTTPRequestHandler], wrap: Callable[[socket.socket], socket.socket] | None = None
    ) -> http.server.ThreadingHTTPServer:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        if wrap is not None:
            server.socket = wrap(server.socket)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_attempt_gets_the_status_and_sends_the_host_header(serve: Any) -> None:
    server = serve(_Ok)
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    target = resolve_target(url, allowed_hosts=LOOPBACK)
    outcome = post(target, body=BODY, request_headers={"webhook-id": "msg_1"}, timeout_s=5.0)
    assert (outcome.status_code, outcome.error, outcome.delivered) == (204, None, True)
    assert server.seen["webhook-id"] == "msg_1"
    assert server.seen["Host"] == f"127.0.0.1:{server.server_address[1]}"


def test_a_trickling_receiver_cannot_stretch_the_deadline(serve: Any) -> None:
    # Given a receiver that sends a byte every 0.2 s (no read ever waits the full timeout)
    server = serve(_Trickle)
    target = resolve_target(f"http://127.0.0.1:{server.server_address[1]}/hook", allowed_hosts=LOOPBACK)
    # When an attempt has 1 s
    started = time.monotonic()
    outcome = post(target, body=BODY, request_headers={}, timeout_s=1.0)
    # Then it ends at the deadline, as a timeout
    assert time.monotonic() - started < 2.0
    assert outcome.status_code is None and outcome.error == "timed out after 1 s"
    assert not outcome.delivered


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for DNS name ``localhost`` (only), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "atelier-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any) -> Any:
    """Serve a handler over TLS as ``localhost``; the attempt's TLS context trusts that certificate only."""
    cert_path, key_path = _self_signed(tmp_path)
    client_context = ssl.create_default_context(cafile=str(cert_path))
    monkeypatch.setattr(worker_webhooks, "_tls_context", lambda: client_context)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)

    def start(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
        return serve(handler, lambda sock: server_context.wrap_socket(sock, server_side=True))

    return start


def test_https_to_a_pinned_address_checks_the_certificate_against_the_name(tls: Any) -> None:
    # Given a TLS receiver whose certificate names localhost, reached at its checked address 127.0.0.1
    port = tls(_Ok).server_address[1]
    pinned = webhooks.Target(url=f"https://127.0.0.1:{port}/hook", host="localhost", host_header=f"localhost:{port}")
    # Then the attempt verifies the certificate for the name (SNI), not the address, and is delivered
    assert post(pinned, body=BODY, request_headers={}, timeout_s=5.0).status_code == 204
    # And a name the certificate does not carry fails verification
    wrong = webhooks.Target(url=f"https://127.0.0.1:{port}/hook", host="example.com", host_header="example.com")
    refused = post(wrong, body=BODY, request_headers={}, timeout_s=5.0)
    assert refused.status_code is None and "certificate" in (refused.error or "").lower(), refused


def test_a_trickling_tls_receiver_cannot_stretch_the_deadline(tls: Any) -> None:
    port = tls(_Trickle).server_address[1]
    target = webhooks.Target(url=f"https://127.0.0.1:{port}/hook", host="localhost", host_header=f"localhost:{port}")
    started = time.monotonic()
    outcome = post(target, body=BODY, request_headers={}, timeout_s=1.0)
    assert time.monotonic() - started < 2.0
    assert outcome.status_code is None and outcome.error == "timed out after 1 s"
