"""HTTP/2 for browsers: the README's nginx in front of the web listener, as the README says.

The web listener speaks HTTP/1.1, where a browser holds at most six
connections to one origin; the README's answer is a TLS-terminating proxy
with HTTP/2 in front, and its nginx block is what runs here (read from the
README; only ports, certificate and, for the heartbeat test, the read
timeout changed).  nginx is Debian's, run as the current user from a
folder of the test's; its certificate comes from a throwaway CA, and
chromium trusts exactly that certificate's key (no CA installed, no
certificate error ignored).

Asserted: a page's streams go over HTTP/2 through nginx (chromium's own
record of the response, and nginx's access log) for both protocols, and
each update emitted through gRPC reaches the page before the next is
emitted (nothing buffers the stream); eight streams of one page are open
together through the proxy where only six are straight to the listener,
the others waiting for a connection; with a proxy read timeout of 3 s, a
quiet stream with the listener's heartbeats (1 s here) lives on past it
while one without heartbeats is cut by it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from eventrouter.client import EventRouterClient
from tests.browser.harness import (
    PROTOCOLS,
    SESSION,
    Browser,
    Log,
    Origin,
    Page,
    Stage,
    emit,
    of_type,
    until_connections,
    updates,
    web_url,
)
from tests.security.helpers import Keys, secure_server
from tests.support.model import wait_until
from tests.support.nginx import Certificate, require_nginx, running_nginx
from tests.support.pki import Authority

SUBSCRIBE = "/eventrouter.v1.EventRouterService/Subscribe"
# chromium's limit of HTTP/1.1 connections per origin (its socket pool's, per host and port).
HTTP1_CONNECTIONS_PER_ORIGIN = 6
STREAMS = 8


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """nginx's certificate (for 127.0.0.1 and localhost) and key, from a throwaway CA."""
    require_nginx()
    issued = Authority().issue("localhost", server=True)
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(issued.cert)
    key.write_bytes(issued.key)
    os.chmod(key, 0o600)
    return Certificate(cert, key)


def spki_pin(cert_pem: bytes) -> str:
    """The base64 SHA-256 of a certificate's public key, as chromium pins keys."""
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def browser(node: str, tls: Certificate) -> Iterator[Browser]:
    """One chromium for the module, trusting nginx's certificate (its key, pinned)."""
    pin = spki_pin(tls.cert.read_bytes())
    driven = Browser(node, [f"--ignore-certificate-errors-spki-list={pin}"])
    try:
        yield driven
    finally:
        driven.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_page_subscribes_over_http2_through_nginx_and_gets_each_event_at_once(
    protocol: str, stage: Stage, tls: Certificate, tmp_path: Path
) -> None:
    page, server, router, keys = stage.page, stage.server, stage.router, stage.keys
    user = f"h2-{protocol}"
    token = keys.user(user, session_id=SESSION)
    with running_nginx(tmp_path / "nginx", server.web_port, tls) as nginx:
        opened = await page.subscribe(
            "s", baseUrl=nginx.url, protocol=protocol, token=token, session=SESSION
        )
        assert opened["type"] == "opened", opened
        # Each update reaches the page before the next one is emitted: a proxy
        # that buffered the response would hold them (they are ~100 bytes).
        for n in range(1, 4):
            assert await emit(router, user, f"u{n}") == [n]
            log = await page.until("s", "update", n)
        assert updates(log) == [("u1", 1), ("u2", 2), ("u3", 3)]
        assert (await page.protocols())[nginx.url + SUBSCRIBE] == "h2"
        await page.close_subscription("s")
        await until_connections(router, user, 0)
    # nginx saw HTTP/2 too: the preflight and the stream, passed on to the listener.
    access = nginx.access_log()
    assert f"HTTP/2.0 OPTIONS {SUBSCRIBE} 204" in access
    assert f"HTTP/2.0 POST {SUBSCRIBE} 200" in access


async def until_received(page: Page, names: list[str], update_id: str) -> dict[str, Log]:
    """Wait until every subscription in ``names`` has received ``update_id``; all logs."""
    logs: dict[str, Log] = {}

    async def received() -> bool:
        logs.update(await page.logs())
        return all(update_id in {e.get("id") for e in logs[name]} for name in names)

    await wait_until(received, what=f"{update_id} on {names}")
    return logs


async def test_eight_streams_of_a_page_open_together_over_http2_and_six_over_http1(
    stage: Stage, tls: Certificate, tmp_path: Path
) -> None:
    page, server, router, keys = stage.page, stage.server, stage.router, stage.keys
    user = "tabs"
    token = keys.user(user)
    # Straight to the listener (HTTP/1.1): six streams open, the others wait.
    direct = [f"direct-{n}" for n in range(STREAMS)]
    for name in direct:
        await page.start(name, baseUrl=web_url(server), protocol="connect", token=token)
    await until_connections(router, user, HTTP1_CONNECTIONS_PER_ORIGIN)
    await emit(router, user, "u1")
    logs = await page.logs()
    opened = [name for name in direct if logs[name]]
    logs = await until_received(page, opened, "u1")
    assert len(opened) == HTTP1_CONNECTIONS_PER_ORIGIN
    waiting = [name for name in direct if name not in opened]
    assert all(logs[name] == [] for name in waiting), logs
    assert len(await router.get_connections(user)) == HTTP1_CONNECTIONS_PER_ORIGIN
    # One ends: a waiting one gets its connection, and opens.
    await page.close_subscription(opened[0])
    await wait_until(
        lambda: _any_opened(page, waiting), what="a waiting stream to take the freed connection"
    )
    await until_connections(router, user, HTTP1_CONNECTIONS_PER_ORIGIN)
    for name in direct[1:]:
        await page.close_subscription(name)
    await until_connections(router, user, 0)

    # Through the README's nginx (HTTP/2): all eight open together, on one connection.
    with running_nginx(tmp_path / "nginx", server.web_port, tls) as nginx:
        proxied = [f"proxied-{n}" for n in range(STREAMS)]
        for name in proxied:
            await page.start(name, baseUrl=nginx.url, protocol="connect", token=token)
        await until_connections(router, user, STREAMS)
        [offset] = await emit(router, user, "u2")
        logs = await until_received(page, proxied, "u2")
        assert all(updates(logs[name]) == [("u2", offset)] for name in proxied)
        assert (await page.protocols())[nginx.url + SUBSCRIBE] == "h2"
        for name in proxied:
            await page.close_subscription(name)
        await until_connections(router, user, 0)


async def _any_opened(page: Page, names: list[str]) -> bool:
    logs = await page.logs()
    return any(of_type(logs[name], "opened") for name in names)


async def test_heartbeats_keep_a_quiet_stream_alive_through_a_shorter_proxy_timeout(
    page: Page,
    keys: Keys,
    keys_file: Path,
    sites: tuple[Origin, Origin],
    tls: Certificate,
    tmp_path: Path,
) -> None:
    user = "quiet"
    token = keys.user(user, session_id=SESSION)
    web = {"web_listen": "127.0.0.1:0", "web_cors_origins": sites[0].url}
    # One node gives web streams a heartbeat every second; the other none at all.
    async with (
        secure_server(keys_file, web_heartbeat_ms=1000, **web) as beating,
        secure_server(keys_file, web_heartbeat_ms=0, heartbeat_ms=0, **web) as silent,
        EventRouterClient(f"127.0.0.1:{beating.port}", token=keys.service()) as router,
    ):
        with (
            running_nginx(tmp_path / "beating", beating.web_port, tls, "3s") as to_beating,
            running_nginx(tmp_path / "silent", silent.web_port, tls, "3s") as to_silent,
        ):
            target = {"protocol": "connect", "token": token, "session": SESSION}
            kept = await page.subscribe("kept", baseUrl=to_beating.url, **target)
            cut = await page.subscribe("cut", baseUrl=to_silent.url, **target)
            assert (kept["type"], kept["heartbeatMs"]) == ("opened", 1000)
            assert (cut["type"], cut["heartbeatMs"]) == ("opened", 0)

            # Nothing is emitted: the silent stream is cut by the proxy's read timeout...
            cut_log = await page.until("cut", "reconnecting", 1)
            silence_ms = of_type(cut_log, "reconnecting")[0]["atMs"] - cut["atMs"]
            assert silence_ms >= 2_900, cut_log
            assert "upstream timed out" in to_silent.error_log()
            # ...while the one with heartbeats lives on past it, on the same connection.
            kept_log = await page.until("kept", "heartbeat", 5)
            assert of_type(kept_log, "heartbeat")[-1]["atMs"] - kept["atMs"] > 3_000 + 1_000
            assert await emit(router, user, "after-the-quiet") == [1]
            kept_log = await page.until("kept", "update", 1)
            assert updates(kept_log) == [("after-the-quiet", 1)]
            assert [e["type"] for e in kept_log if e["type"] != "heartbeat"] == ["opened", "update"]
            await page.close_subscription("kept")
            await page.close_subscription("cut")
