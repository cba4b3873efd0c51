"""Placeholder; replaced by the real CLI."""


def main() -> None:
    raise SystemExit("not yet")
