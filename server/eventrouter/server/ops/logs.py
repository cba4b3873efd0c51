"""Structured logs over the standard ``logging`` module: text, JSON or logfmt.

``--log-format`` picks one ``logging.Formatter``:

- ``text`` (default, for a terminal): ``2025-01-01T12:00:00.123Z INFO eventrouter.server
  message key=value ...``
- ``json``: one JSON object per line: ``{"ts": ..., "level": ..., "logger": ...,
  "msg": ..., "user_id": ..., "connection_id": ...}``
- ``logfmt``: one line of ``key=value`` pairs, values quoted when needed.

Context fields.  A record carries ``user_id`` / ``connection_id`` (and any other
``extra=`` field) as its own keys, so collectors can index them.  The server
passes them either as ``extra={"user_id": ...}`` or, in existing messages, as
the argument right after the word ``user`` / ``connection`` in the template
(``log.warning("stream of user %r ...", user_id)``): ``ContextFilter`` lifts
those arguments into fields too.

``--hash-user-ids`` replaces every user id found that way, in the field and in
the message, by ``u:`` + the first 16 hex digits of HMAC-SHA256(key, user id).
The key comes from ``--hash-key-file`` (same key = same hashes across nodes
and restarts, so a user's lines can still be followed) or is random per
process.  Without the key a hash cannot be reversed by trying likely ids.

What never reaches a log: tokens (the server never logs credentials; as a
second line of defence anything shaped like a JWT or a ``Bearer`` value is
replaced by ``[redacted]`` in every line) and payload contents (never logged).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
import time
from pathlib import Path
from typing import IO, Any

from eventrouter.server.config import ServerConfig

HASH_PREFIX = "u:"
MIN_HASH_KEY_BYTES = 16

# A random key for processes not given --hash-key-file: one per process, so the
# logs and the status page of one node agree.
_PROCESS_KEY = secrets.token_bytes(32)

_TOKEN_PATTERNS = (
    # JWS compact serialization: base64url header starting {"  ...
    re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)(bearer\s+)\S+"),
)
REDACTED = "[redacted]"


class UserIdHasher:
    """Keyed hash of user ids: stable for one key, not reversible without it."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_HASH_KEY_BYTES:
            raise ValueError(f"hash key must hold at least {MIN_HASH_KEY_BYTES} bytes")
        self._key = key

    def __call__(self, user_id: str) -> str:
        digest = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
        return HASH_PREFIX + digest[:16]

    def __repr__(self) -> str:  # never show the key
        return "UserIdHasher(<key>)"

    @classmethod
    def from_config(cls, config: ServerConfig) -> UserIdHasher | None:
        """The hasher ``config`` asks for (None without --hash-user-ids); ValueError if bad."""
        if not config.hash_user_ids:
            return None
        if not config.hash_key_file:
            return cls(_PROCESS_KEY)
        try:
            key = Path(config.hash_key_file).read_bytes().strip()
        except OSError as e:
            raise ValueError(
                f"hash_key_file: cannot read {config.hash_key_file}: {e.strerror or e}"
            ) from None
        if len(key) < MIN_HASH_KEY_BYTES:
            raise ValueError(
                f"hash_key_file: {config.hash_key_file} holds {len(key)} bytes,"
                f" at least {MIN_HASH_KEY_BYTES} are needed"
            )
        return cls(key)


def redact_tokens(text: str) -> str:
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


# printf-style placeholders of a logging template (with an optional %(name) key).
_PLACEHOLDER = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?(?P<conv>[a-zA-Z%])"
)
# The word before a placeholder that says which context field its argument is.
_ARG_FIELDS = (
    (re.compile(r"(?i)\buser(?:[ _]id)?[ =:]$"), "user_id"),
    (re.compile(r"(?i)\bconnection(?:[ _]id)?[ =:]$"), "connection_id"),
)


def _context_args(template: str) -> dict[int, str]:
    """Positional argument index -> context field, for ``user %r``-style arguments."""
    found: dict[int, str] = {}
    index = 0
    for match in _PLACEHOLDER.finditer(template):
        if match.group("conv") == "%":
            continue
        if match.group("key") is not None or match.group("width") == "*" or "*" in match.group():
            return {}  # mapping or starred templates: leave them alone
        before = template[: match.start()]
        for pattern, name in _ARG_FIELDS:
            if pattern.search(before):
                found[index] = name
                break
        index += 1
    return found


class ContextFilter(logging.Filter):
    """Lifts user and connection ids into fields; hashes user ids when asked.

    Attach it to the handler (not to a logger) so that it sees records from
    every logger, third-party ones included, exactly once.
    """

    def __init__(self, hasher: UserIdHasher | None = None) -> None:
        super().__init__()
        self.hasher = hasher

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_eventrouter_context", False):
            return True
        record._eventrouter_context = True
        args = record.args
        if isinstance(record.msg, str) and isinstance(args, tuple) and args:
            positions = _context_args(record.msg)
            if positions:
                new_args = list(args)
                for index, name in positions.items():
                    if index >= len(new_args):
                        continue
                    value = new_args[index]
                    if not isinstance(value, str):
                        continue
                    if name == "user_id" and self.hasher is not None:
                        value = new_args[index] = self.hasher(value)
                    if not hasattr(record, name):
                        setattr(record, name, value)
                record.args = tuple(new_args)
        user_id = getattr(record, "user_id", None)
        if (
            self.hasher is not None
            and isinstance(user_id, str)
            and not user_id.startswith(HASH_PREFIX)
        ):
            record.user_id = self.hasher(user_id)
        return True


# Attributes every LogRecord has; anything else on a record came from extra=.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
# Context fields first, in this order; other extras follow sorted.
_CONTEXT_ORDER = ("node_id", "connection_id", "user_id")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extra = {
        k: v
        for k, v in record.__dict__.items()
        if k not in _STANDARD_ATTRS and not k.startswith("_")
    }
    ordered = {k: extra.pop(k) for k in _CONTEXT_ORDER if k in extra}
    ordered.update(sorted(extra.items()))
    return ordered


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class _StructuredFormatter(logging.Formatter):
    """Builds the record's fields once; subclasses only render them."""

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_tokens(record.getMessage()),
        }
        for key, value in _extras(record).items():
            if key in out:
                key = "extra_" + key
            out[key] = redact_tokens(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = redact_tokens(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = redact_tokens(self.formatStack(record.stack_info))
        return out


class JsonFormatter(_StructuredFormatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.fields(record), default=str, separators=(",", ":"))


_LOGFMT_BARE = re.compile(r"[^\s=\"\\]+")


def logfmt_value(value: Any) -> str:
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if text and _LOGFMT_BARE.fullmatch(text):
        return text
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


class LogfmtFormatter(_StructuredFormatter):
    """``key=value`` pairs on one line (as read by Loki, Heroku, humanlog...)."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={logfmt_value(v)}" for k, v in self.fields(record).items())


class TextFormatter(_StructuredFormatter):
    """For a terminal: time, level, logger, message, then the context as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        f = self.fields(record)
        line = f"{f.pop('ts')} {f.pop('level').upper():<7} {f.pop('logger')} {f.pop('msg')}"
        exc = f.pop("exc", None)
        stack = f.pop("stack", None)
        if f:
            line += "  " + " ".join(f"{k}={logfmt_value(v)}" for k, v in f.items())
        for block in (exc, stack):
            if block:
                line += "\n" + block
        return line


FORMATTERS: dict[str, type[logging.Formatter]] = {
    "text": TextFormatter,
    "json": JsonFormatter,
    "logfmt": LogfmtFormatter,
}


def configure_logging(
    config: ServerConfig,
    *,
    stream: IO[str] | None = None,
    logger: logging.Logger | None = None,
    hasher: UserIdHasher | None = None,
) -> logging.Handler:
    """Send ``logger``'s records (default: the root logger) to ``stream`` in the chosen format.

    Replaces a handler an earlier call installed there, leaves any other
    handler alone, and returns the new one (tests remove it afterwards).
    ``hasher`` defaults to the one ``config`` asks for.
    """
    target = logger if logger is not None else logging.getLogger()
    for old in list(target.handlers):
        if getattr(old, "_eventrouter_handler", False):
            target.removeHandler(old)
            old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._eventrouter_handler = True  # type: ignore[attr-defined]
    handler.setFormatter(FORMATTERS[config.log_format]())
    handler.addFilter(
        ContextFilter(hasher if hasher is not None else UserIdHasher.from_config(config))
    )
    target.addHandler(handler)
    target.setLevel(config.log_level.upper())
    return handler


__all__ = [
    "FORMATTERS",
    "ContextFilter",
    "JsonFormatter",
    "LogfmtFormatter",
    "TextFormatter",
    "UserIdHasher",
    "configure_logging",
    "logfmt_value",
    "redact_tokens",
]
