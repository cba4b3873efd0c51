"""Configuration from flags, EVENTROUTER_* variables and a TOML file; ``eventrouter config``."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from eventrouter.server.config import (
    ConfigError,
    ServerConfig,
    add_serve_arguments,
    checks,
    config_from_args,
    resolve_config,
)
from eventrouter.server.ops import config_cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eventrouter.toml"
    path.write_text(text)
    return path


def problems_of(args: argparse.Namespace, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        resolve_config(args, environ)
    return caught.value.problems


# -- precedence ---------------------------------------------------------------


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'listen = "127.0.0.1:1111"\n'
        "queue_max_events = 11\n"
        "history_max_updates = 12\n"
        "heartbeat_ms = 13\n",
    )
    environ = {
        "EVENTROUTER_LISTEN": "127.0.0.1:2222",
        "EVENTROUTER_QUEUE_MAX_EVENTS": "21",
        "EVENTROUTER_HISTORY_MAX_UPDATES": "22",
    }
    args = parse("--config", str(path), "--listen", "127.0.0.1:3333", "--queue-max-events", "31")
    resolved = resolve_config(args, environ)
    config = resolved.config
    assert config.listen == "127.0.0.1:3333"  # flag beats env and file
    assert config.queue_max_events == 31  # flag beats env and file
    assert config.history_max_updates == 22  # env beats file
    assert config.heartbeat_ms == 13  # file beats default
    assert config.max_event_bytes == ServerConfig().max_event_bytes  # default
    assert str(resolved.sources["listen"]) == "flag --listen"
    assert str(resolved.sources["history_max_updates"]) == (
        "environment variable EVENTROUTER_HISTORY_MAX_UPDATES"
    )
    assert str(resolved.sources["heartbeat_ms"]) == f"config file {path}"
    assert str(resolved.sources["max_event_bytes"]) == "default"
    assert config_from_args(args, environ) == config


def test_config_file_from_the_environment_and_booleans(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "insecure = true\nhash_user_ids = true\n")
    environ = {"EVENTROUTER_CONFIG": str(path), "EVENTROUTER_HASH_USER_IDS": "off"}
    config = resolve_config(parse(), environ).config
    assert config.insecure is True  # from the file named by EVENTROUTER_CONFIG
    assert config.hash_user_ids is False  # the environment beats the file
    # --no-insecure (a flag) beats the file's true.
    assert resolve_config(parse("--no-insecure"), environ).config.insecure is False


def test_floats_accept_toml_integers_and_client_variables_are_ignored(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "history_max_age_s = 60\n")
    environ = {"EVENTROUTER_TOKEN": "t", "EVENTROUTER_TARGET": "x:1", "OTHER": "1"}
    config = resolve_config(parse("--config", str(path)), environ).config
    assert config.history_max_age_s == 60.0
    assert isinstance(config.history_max_age_s, float)


def test_workers_a_number_or_auto_from_each_source(tmp_path: Path) -> None:
    redis = "redis://127.0.0.1:6379/0"
    # A TOML integer, as well as a string ("auto").
    path = write_toml(tmp_path, f'workers = 4\nbroker = "{redis}"\n')
    config = resolve_config(parse("--config", str(path)), {}).config
    assert (config.workers, config.worker_count()) == ("4", 4)
    config = resolve_config(parse("--config", str(path)), {"EVENTROUTER_WORKERS": "auto"}).config
    assert config.worker_count() == checks.cpu_cores()
    config = resolve_config(parse("--workers", "3", "--broker", redis), {}).config
    assert config.worker_count() == 3
    # Workers share their port (SO_REUSEPORT); one process refuses a port held that way.
    assert ("grpc.so_reuseport", 1) in config.grpc_options()
    assert ("grpc.so_reuseport", 0) in ServerConfig().grpc_options()
    assert ServerConfig().worker_count() == 1  # the default: one process

    out = io.StringIO()
    assert config_cli.run(parse("--config", str(path)), out=out, environ={}) == 0
    assert f'workers = "4"  # config file {path}' in out.getvalue().splitlines()


def test_more_than_one_worker_needs_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "SHARED_PORTS", False)
    [problem] = problems_of(parse("--workers", "2", "--broker", "redis://127.0.0.1:6379/0"), {})
    assert problem.startswith("flag --workers: workers: more than 1 worker needs Linux")
    assert resolve_config(parse("--workers", "1"), {}).config.worker_count() == 1


@pytest.mark.parametrize(
    ("argv", "environ", "fragment"),
    [
        (("--workers", "0"), {}, "flag --workers: workers: expected a number of workers (1 or"),
        ((), {"EVENTROUTER_WORKERS": "many"}, "environment variable EVENTROUTER_WORKERS: workers:"),
        (
            ("--workers", "2"),
            {},
            "workers (flag --workers), broker (default): 2 workers need a shared broker:"
            " add --broker redis://HOST:PORT/DB (with memory:// each worker would route only"
            " its own connections)",
        ),
    ],
)
def test_workers_refused(argv: tuple[str, ...], environ: dict[str, str], fragment: str) -> None:
    [problem] = problems_of(parse(*argv), environ)
    assert problem.startswith(fragment), problem


# -- every wrong value names its source and field ------------------------------


def test_bad_values_name_source_and_field(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'queue_max_events = "many"\nqueu_max_bytes = 10\ninsecure = 1\n[tls]\ncert = "x"\n',
    )
    environ = {
        "EVENTROUTER_HEARTBEAT_MS": "soon",
        "EVENTROUTER_INSECURE": "maybe",
        "EVENTROUTER_LISTN": "127.0.0.1:1",
        "EVENTROUTER_LOG_FORMAT": "xml",
    }
    problems = problems_of(parse("--config", str(path), "--listen", "nowhere"), environ)
    text = "\n".join(problems)
    expected = [
        f"config file {path}: queue_max_events: expected an integer, got a string 'many'",
        f"config file {path}: unknown key 'queu_max_bytes' (did you mean queue_max_bytes?)",
        f"config file {path}: insecure: expected true or false, got an integer 1",
        f"config file {path}: unknown key 'tls'",
        "environment variable EVENTROUTER_HEARTBEAT_MS: heartbeat_ms: expected an integer,"
        " got 'soon'",
        "environment variable EVENTROUTER_INSECURE: insecure: expected true or false",
        "environment variable EVENTROUTER_LISTN: unknown setting"
        " (did you mean EVENTROUTER_LISTEN?)",
        "environment variable EVENTROUTER_LOG_FORMAT: log_format: expected one of text, json,"
        " logfmt, got 'xml'",
        "flag --listen: listen: expected HOST:PORT, got 'nowhere'",
    ]
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    assert len(problems) == len(expected), text


@pytest.mark.parametrize(
    ("args", "environ", "toml", "fragment"),
    [
        (
            ("--queue-max-events", "0"),
            {},
            "",
            "flag --queue-max-events: queue_max_events: must be at least 1, got 0",
        ),
        (
            (),
            {"EVENTROUTER_HISTORY_MAX_AGE_S": "-5"},
            "",
            "environment variable EVENTROUTER_HISTORY_MAX_AGE_S: history_max_age_s:"
            " must not be negative, got -5.0",
        ),
        (
            (),
            {},
            "health_interval_s = 0\n",
            "config file {path}: health_interval_s: must be more than 0, got 0.0",
        ),
        (
            (),
            {},
            "keepalive_time_s = nan\n",
            "config file {path}: keepalive_time_s: must be a finite number, got nan",
        ),
        (
            ("--event-loop", "trio"),
            {},
            "",
            "flag --event-loop: event_loop: expected one of auto, uvloop, asyncio, got 'trio'",
        ),
        (
            ("--metrics-listen", "9464"),
            {},
            "",
            "flag --metrics-listen: metrics_listen: expected HOST:PORT or empty (off), got '9464'",
        ),
        (
            ("--max-event-bytes", "100"),
            {"EVENTROUTER_MAX_REQUEST_BYTES": "10"},
            "",
            "max_event_bytes (flag --max-event-bytes), max_request_bytes (environment variable"
            " EVENTROUTER_MAX_REQUEST_BYTES): max_event_bytes (100) must not exceed"
            " max_request_bytes (10)",
        ),
        (
            ("--tls-cert", "c.pem"),
            {},
            "",
            "tls_cert (flag --tls-cert), tls_key (default): tls_cert and tls_key go together",
        ),
        (
            (),
            {"EVENTROUTER_HASH_KEY_FILE": "/k"},
            "",
            "hash_key_file (environment variable EVENTROUTER_HASH_KEY_FILE), hash_user_ids"
            " (default): hash_key_file has no effect without hash_user_ids",
        ),
        (
            (),
            {},
            "log_level = 'loud'\n",
            "config file {path}: log_level: expected one of debug, info, warning, error,"
            " got 'loud'",
        ),
        ((), {}, "listen = \n", "config file {path}: not valid TOML"),
    ],
)
def test_each_bad_value_message(
    tmp_path: Path, args: tuple[str, ...], environ: dict[str, str], toml: str, fragment: str
) -> None:
    argv = list(args)
    path = tmp_path / "c.toml"
    if toml:
        path.write_text(toml)
        argv += ["--config", str(path)]
    problems = problems_of(parse(*argv), environ)
    assert problems == [fragment.format(path=path)] or any(
        p.startswith(fragment.format(path=path)) for p in problems
    ), problems
    assert len(problems) == 1, problems


def test_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    [problem] = problems_of(parse("--config", str(missing)), {})
    assert problem.startswith(f"config file {missing}: cannot read it")


def test_argparse_rejects_a_bad_flag_type_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse("--queue-max-events", "lots")
    assert "--queue-max-events" in capsys.readouterr().err


def test_direct_construction_still_validates() -> None:
    with pytest.raises(ValueError, match=r"listen: expected HOST:PORT"):
        ServerConfig(listen="nowhere")


# -- eventrouter config -------------------------------------------------------


def test_config_output_is_toml_with_sources_and_redaction(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    path = write_toml(tmp_path, f'keys_file = "{keys}"\nrevoked_token_ids = "jti-1,jti-2"\n')
    environ = {"EVENTROUTER_QUEUE_MAX_EVENTS": "64", "EVENTROUTER_TLS_KEY": "/etc/tls/key.pem"}
    args = parse("--config", str(path), "--node-id", "node-a", "--tls-cert", "/etc/tls/c.pem")
    out = io.StringIO()
    assert config_cli.run(args, out=out, environ=environ) == 0
    text = out.getvalue()
    lines = {line.split(" = ")[0]: line for line in text.splitlines() if " = " in line}

    assert lines["node_id"] == 'node_id = "node-a"  # flag --node-id'
    assert lines["queue_max_events"] == (
        "queue_max_events = 64  # environment variable EVENTROUTER_QUEUE_MAX_EVENTS"
    )
    assert lines["keys_file"] == f'keys_file = "{keys}"  # config file {path}'
    assert lines["listen"] == 'listen = "127.0.0.1:50051"  # default'
    # Secret-looking names are redacted; file paths (tls_key, keys_file) are not.
    assert lines["revoked_token_ids"] == (
        f'revoked_token_ids = "<redacted>"  # config file {path} (redacted)'
    )
    assert "jti-1" not in text
    assert lines["tls_key"].startswith('tls_key = "/etc/tls/key.pem"')
    assert f"# config file: {path}" in text

    # The output is itself a valid config file, field for field.
    data = tomllib.loads(text)
    assert set(data) == set(ServerConfig.__dataclass_fields__)
    assert data["queue_max_events"] == 64
    assert data["insecure"] is False


def test_config_command_reports_problems(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    args = parse("--listen", "nowhere")
    assert config_cli.run(args, out=out, err=err, environ={}) == 2
    assert out.getvalue() == ""
    assert "flag --listen: listen: expected HOST:PORT" in err.getvalue()


def test_config_module_entry_point(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTROUTER_")}
    env["EVENTROUTER_LOG_FORMAT"] = "json"
    ok = subprocess.run(
        [sys.executable, "-m", "eventrouter.server.ops.config_cli", "--log-level", "debug"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    data = tomllib.loads(ok.stdout)
    assert data["log_level"] == "debug"
    assert data["log_format"] == "json"
    assert 'log_format = "json"  # environment variable EVENTROUTER_LOG_FORMAT' in ok.stdout

    env["EVENTROUTER_QUEUE_MAX_EVENTS"] = "-1"
    bad = subprocess.run(
        [sys.executable, "-m", "eventrouter.server.ops.config_cli"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert (
        "environment variable EVENTROUTER_QUEUE_MAX_EVENTS: queue_max_events: must not be"
        " negative, got -1" in bad.stderr
    )


def test_serve_refuses_a_bad_configuration_before_starting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTROUTER_")}
    env["EVENTROUTER_QUEUE_MAX_EVENT"] = "5"
    result = subprocess.run(
        [sys.executable, "-m", "eventrouter.server", "--insecure", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "eventrouter serve: invalid configuration:" in result.stderr
    assert "EVENTROUTER_QUEUE_MAX_EVENT: unknown setting" in result.stderr
