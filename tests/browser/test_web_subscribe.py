"""A real page in Debian's chromium subscribes over the Connect protocol and over gRPC-Web.

The page's script (page.mjs) is bundled by esbuild from the npm package
``@eventrouter/client`` (its web entry, as built for npm) and served from a
web origin of its own; the test drives it (driver.mjs: playwright-core, one
chromium for the module) and emits between the steps through the Python
client over gRPC.  The server is the secure default (JWTs), with the web
listener on and the page's origin the only one allowed.

Asserted exactly: updates arrive in order with their positions; after the
network drops the page's stream (a TCP cut, its reconnects refused while
updates are emitted) and after the page reloads (resuming from the position
it had), it resumes with no gap and no duplicate; bad, expired, wrong-scope
and service tokens get UNAUTHENTICATED / PERMISSION_DENIED and another
user's token sees none of this user's events; the same page from an origin
not on the allowlist is refused by the browser's CORS check, and the server
never registers a connection for it.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.browser.harness import (
    PROTOCOLS,
    SESSION,
    Browser,
    Cable,
    Origin,
    Stage,
    emit,
    of_type,
    open_page,
    until_connections,
    updates,
    web_url,
)
from tests.security.helpers import counters, moved


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_updates_arrive_in_order_and_resume_without_gap_or_duplicate(
    protocol: str, stage: Stage
) -> None:
    page, server, router, keys = stage.page, stage.server, stage.router, stage.keys
    user = f"alice-{protocol}"
    token = keys.user(user, session_id=SESSION)
    async with Cable(server.web_port) as cable:
        opened = await page.subscribe(
            "s", baseUrl=cable.url, protocol=protocol, token=token, session=SESSION
        )
        assert opened["type"] == "opened", opened
        assert opened["resume"] == "NOT_REQUESTED"
        assert opened["position"]["offset"] == "0"
        assert opened["heartbeatMs"] == 15_000  # the web listener's default (README)
        epoch = opened["position"]["epoch"]
        [first_id] = await until_connections(router, user, 1)
        assert first_id == opened["connectionId"]

        assert await emit(router, user, "u1", "u2", "u3") == [1, 2, 3]
        log = await page.until("s", "update", 3)
        assert updates(log) == [("u1", 1), ("u2", 2), ("u3", 3)]
        assert {e["epoch"] for e in of_type(log, "update")} == {epoch}

        # The network drops the page's stream; its reconnects are refused while
        # two updates are emitted, then the network is back.
        cable.cut()
        await until_connections(router, user, 0)
        assert await emit(router, user, "u4", "u5") == [4, 5]
        await page.until("s", "reconnecting", 2)
        cable.mend()
        log = await page.until("s", "update", 5)
        assert await emit(router, user, "u6") == [6]
        log = await page.until("s", "update", 6)

    assert updates(log) == [(f"u{n}", n) for n in range(1, 7)]  # no gap, no duplicate
    reopened = of_type(log, "opened")[1]
    assert reopened["resume"] == "RESUMED"
    assert reopened["replayed"] == 2
    assert reopened["connectionId"] != opened["connectionId"]
    assert reopened["position"]["epoch"] == epoch
    # Its reconnects said why, and none of them made the stream give up.
    assert {e["codeName"] for e in of_type(log, "reconnecting")} <= {"UNAVAILABLE", "UNKNOWN"}
    assert not of_type(log, "error")
    order = [e["type"] for e in log if e["type"] != "reconnecting"]
    assert order == ["opened", *["update"] * 3, "opened", *["update"] * 3]

    # The page reloads (every connection it holds drops) and resumes, straight
    # to the web listener, from the last position it had.
    last = {"offset": log[-1]["offset"], "epoch": log[-1]["epoch"]}
    await page.reload()
    await until_connections(router, user, 0)
    assert await emit(router, user, "u7", "u8") == [7, 8]
    resumed = await page.subscribe(
        "r",
        baseUrl=web_url(server),
        protocol=protocol,
        token=token,
        session=SESSION,
        resumeFrom=last,
    )
    assert (resumed["type"], resumed["resume"], resumed["replayed"]) == ("opened", "RESUMED", 2)
    await page.until("r", "update", 2)
    assert await emit(router, user, "u9") == [9]
    log = await page.until("r", "update", 3)
    assert updates(log) == [("u7", 7), ("u8", 8), ("u9", 9)]
    assert [e["type"] for e in log] == ["opened", "update", "update", "update"]
    await page.close_subscription("r")
    await until_connections(router, user, 0)


def refused(first: dict[str, Any], name: str, code: str, details: str = "") -> None:
    assert first["type"] == "error", first
    assert (first["name"], first["codeName"]) == (name, code), first
    assert details in first["details"], first


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_bad_and_wrong_tokens_are_refused(protocol: str, stage: Stage) -> None:
    page, server, router, keys = stage.page, stage.server, stage.router, stage.keys
    user = f"alice-{protocol}"
    target = {"baseUrl": web_url(server), "protocol": protocol, "session": SESSION}
    before = counters(server)
    # The client's default reconnect policy: these codes end the subscription at once.
    refused(
        await page.subscribe("garbage", token="not-a-jwt", **target),
        "UnauthenticatedError",
        "UNAUTHENTICATED",
    )
    expired = keys.user(user, session_id=SESSION, exp=time.time() - 3600)
    refused(
        await page.subscribe("expired", token=expired, **target),
        "UnauthenticatedError",
        "UNAUTHENTICATED",
        "expired",
    )
    other_session = keys.user(user, session_id="sess_other")
    refused(
        await page.subscribe("scope", token=other_session, **target),
        "PermissionDeniedError",
        "PERMISSION_DENIED",
        "token only allows the session-scoped connection of session 'sess_other'",
    )
    refused(
        await page.subscribe("service", token=keys.service(), **target),
        "PermissionDeniedError",
        "PERMISSION_DENIED",
    )
    for name in ("garbage", "expired", "scope", "service"):
        assert [e["type"] for e in await page.call("log", name)] == ["error"], name
    assert moved(before[0], counters(server)[0]) == {
        "malformed": 1,
        "expired": 1,
        "scope_not_allowed": 1,
        "wrong_audience": 1,
    }
    await until_connections(router, user, 0)

    # Another user's valid token opens a stream of that user's: none of alice's events.
    alice = await page.subscribe("alice", token=keys.user(user, session_id=SESSION), **target)
    bob = await page.subscribe("bob", token=keys.user(f"bob-{protocol}"), **target)
    assert alice["type"] == bob["type"] == "opened"
    await emit(router, user, "for-alice")
    await emit(router, f"bob-{protocol}", "for-bob")
    alice_log = await page.until("alice", "update", 1)
    bob_log = await page.until("bob", "update", 1)
    assert updates(alice_log) == [("for-alice", 1)]
    assert updates(bob_log) == [("for-bob", 1)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_page_from_an_origin_not_allowed_is_refused(
    protocol: str, stage: Stage, browser: Browser, sites: tuple[Origin, Origin]
) -> None:
    page, server, router, keys = stage.page, stage.server, stage.router, stage.keys
    user = f"alice-{protocol}"
    token = keys.user(user, session_id=SESSION)
    target = {"baseUrl": web_url(server), "protocol": protocol, "session": SESSION}
    _, elsewhere = sites
    before = counters(server)
    other = await open_page(browser, elsewhere)
    try:
        first = await other.subscribe("s", token=token, reconnect=False, **target)
        console = await other.console()
    finally:
        await other.close()
    # The browser refused it (the preflight got no CORS approval): the page's
    # fetch failed, and the client said so.
    refused(first, "EventRouterError", "UNKNOWN", "Failed to fetch")
    blocked = f"from origin '{elsewhere.url}' has been blocked by CORS policy"
    assert any(blocked in line for line in console), console
    # Nothing of it reached the service: no connection, no credential checked.
    await until_connections(router, user, 0)
    assert counters(server) == before
    assert server.router.registry.count_of_user(user) == 0

    # The same page, token and call from the allowed origin open a stream.
    opened = await page.subscribe("s", token=token, **target)
    assert opened["type"] == "opened", opened
    await until_connections(router, user, 1)
    assert Counter(e["type"] for e in await page.close_subscription("s")) == {"opened": 1, "end": 1}
