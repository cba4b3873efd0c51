"""``python -m eventrouter.server``: the same as ``eventrouter serve``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from eventrouter.server.app import serve
from eventrouter.server.config import add_serve_arguments, config_from_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="eventrouter serve", description="Run an eventrouter node (single-node, in-memory)."
    )
    add_serve_arguments(parser)
    run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> None:
    """Validate the flags, configure logging and serve until SIGTERM/SIGINT."""
    try:
        config = config_from_args(args)
    except ValueError as e:
        sys.exit(f"eventrouter serve: {e}")
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
