"""What ``eventrouter`` says when the credential or the transport is wrong.

Real processes throughout: ``eventrouter serve`` in its secure default mode
(keys in a temporary ``$XDG_STATE_HOME``, tokens minted by ``eventrouter
token`` from the same file, as the README walk-through does) and with TLS.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from tests.e2e.cli_helpers import ENV, Lines, needs_console_script, run, serve, stop, subscriber
from tests.support.pki import Authority

pytestmark = needs_console_script


@dataclass(frozen=True)
class Secure:
    target: str
    env: Mapping[str, str]

    def token(self, *args: str) -> str:
        minted = run("token", *args, env=self.env)
        assert minted.returncode == 0, minted.stderr
        return minted.stdout.strip()

    def with_token(self, token: str) -> dict[str, str]:
        return {**self.env, "EVENTROUTER_TOKEN": token, "EVENTROUTER_TARGET": self.target}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    env = {**ENV, "XDG_STATE_HOME": str(tmp_path_factory.mktemp("state"))}
    with serve("--log-level", "warning", env=env) as target:
        yield Secure(target, env)


def error_line(stderr: str, command: str) -> str:
    """Our one line (gRPC's C core may log lines of its own on a failed TLS handshake)."""
    ours = [line for line in stderr.splitlines() if line.startswith(f"eventrouter {command}: ")]
    assert len(ours) == 1, stderr
    return ours[0]


def test_a_token_of_the_wrong_kind_says_which_one_to_mint(secure: Secure) -> None:
    user = secure.with_token(secure.token("--user", "alice"))
    update = '{"id":"u1","seq":1,"body":{"t":"delete-session","sid":"s1"},"createdAt":1}'
    emitted = run("emit", "--user", "alice", "--json", update, env=user)
    assert emitted.returncode == 1
    assert emitted.stderr == (
        "eventrouter emit: PERMISSION_DENIED: token is not valid for this use (audience):"
        " emit needs a service token, not a subscriber's:"
        " export EVENTROUTER_TOKEN=$(eventrouter token --service)\n"
    )
    for command in (["connections", "--user", "alice"], ["disconnect", "--user", "alice"]):
        refused = run(*command, env=user)
        assert refused.returncode == 1
        assert "eventrouter token --service" in refused.stderr

    service = secure.with_token(secure.token("--service"))
    subscribed = run("subscribe", env=service)
    assert subscribed.returncode == 1
    assert subscribed.stderr.endswith(
        "subscribe needs a subscriber token, not a service token:"
        " export EVENTROUTER_TOKEN=$(eventrouter token --user USER)\n"
    )

    anonymous = run("connections", "--user", "alice", "--target", secure.target, env=secure.env)
    assert anonymous.returncode == 1
    assert anonymous.stderr.startswith("eventrouter connections: UNAUTHENTICATED: ")
    assert anonymous.stderr.endswith(
        "the server wants a token: export EVENTROUTER_TOKEN=$(eventrouter token --service)\n"
    )


def test_disconnect_by_token_id_with_revoke_stops_the_subscriber(secure: Secure) -> None:
    token = secure.token("--user", "bob")
    token_id = jwt.decode(token, options={"verify_signature": False})["jti"]
    sub = subscriber(env=secure.with_token(token))
    out, err = Lines(sub.stdout), Lines(sub.stderr)
    try:
        assert out.next_json()["opened"]["userId"] == "bob"
        service = secure.with_token(secure.token("--service"))
        ended = run(
            "disconnect", "--token-id", token_id, "--revoke", "--reason", "logged out", env=service
        )
        assert ended.returncode == 0, ended.stderr
        assert ended.stdout == '{"disconnected":1}\n'
        assert sub.wait(timeout=30) == 1
        assert err.rest() == [
            "eventrouter subscribe: a service revoked this stream; not reconnecting"
            " (PERMISSION_DENIED: disconnected by the service: logged out)"
        ]
    finally:
        stop(sub, out, err)
    again = run("subscribe", env=secure.with_token(token))
    assert again.returncode == 1
    assert again.stderr == "eventrouter subscribe: PERMISSION_DENIED: token has been revoked\n"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A TLS server (insecure credentials, TLS transport) and the file of its CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority()
    pem = ca.issue("eventrouter-server", server=True)
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.pem)
    cert_file.write_bytes(pem.cert)
    key_file.write_bytes(pem.key)
    key_file.chmod(0o600)
    flags = ("--insecure", "--log-level", "warning", "--tls-cert", str(cert_file))
    with serve(*flags, "--tls-key", str(key_file), tls_ca=ca.pem) as target:
        yield target, ca_file


def test_plaintext_against_tls_says_to_pass_the_ca(tls: tuple[str, Path]) -> None:
    target, ca_file = tls
    hint = f"the server at {target} speaks TLS: pass --tls-ca FILE"
    for command in (
        ["connections", "--user", "u1"],
        ["health"],
        ["subscribe", "--user", "u1"],  # at once: retrying cannot help
    ):
        result = run(*command, "--target", target)
        assert result.returncode == 1, result
        assert error_line(result.stderr, command[0]).startswith(f"eventrouter {command[0]}: {hint}")
        assert "reconnecting" not in result.stderr
    served = run("health", "--target", target, "--tls-ca", str(ca_file))
    assert served.returncode == 0, served.stderr
    assert served.stdout == '{"service":"","status":"SERVING"}\n'


def test_tls_against_plaintext_says_to_drop_the_ca(tls: tuple[str, Path], cli_target: str) -> None:
    _, ca_file = tls
    for command in (["connections", "--user", "u1"], ["subscribe", "--user", "u1"]):
        result = run(*command, "--target", cli_target, "--tls-ca", str(ca_file))
        assert result.returncode == 1
        assert error_line(result.stderr, command[0]).startswith(
            f"eventrouter {command[0]}: the server at {cli_target} does not speak TLS:"
            " drop --tls-ca"
        )
