"""``python -m eventrouter.server``: the same as ``eventrouter serve``."""

from __future__ import annotations

import argparse
import sys

from eventrouter.server.app import run_server
from eventrouter.server.config import ConfigError, add_serve_arguments, config_from_args
from eventrouter.server.ops.logs import UserIdHasher, configure_logging
from eventrouter.server.ops.workers import run_workers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="eventrouter serve",
        description="Run an eventrouter node. Settings come from flags, EVENTROUTER_<FIELD>"
        " environment variables and a TOML file (--config), in that order of precedence;"
        " `eventrouter config` shows the result.",
    )
    add_serve_arguments(parser)
    run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> None:
    """Resolve and validate the configuration, configure logging, serve until SIGTERM/SIGINT."""
    try:
        config = config_from_args(args)
        hasher = UserIdHasher.from_config(config)
    except ConfigError as e:
        sys.exit(
            "eventrouter serve: invalid configuration:\n"
            + "\n".join(f"  - {problem}" for problem in e.problems)
        )
    except ValueError as e:
        sys.exit(f"eventrouter serve: invalid configuration: {e}")
    configure_logging(config, stream=sys.stderr, hasher=hasher)
    try:
        if config.worker_count() > 1:
            # A supervisor of N workers (eventrouter.server.ops.workers).
            sys.exit(run_workers(config))
        run_server(config)
    except (ValueError, OSError) as e:
        # Keys file unreadable or too open, TLS files missing, port taken...:
        # a message, not a traceback.
        sys.exit(f"eventrouter serve: {e}")


if __name__ == "__main__":
    main()
