"""Render docs/reference.md from the comments in protos/ (``make docs``).

The layout follows protoc-gen-doc's markdown template: per .proto file its
description, messages (field | type | label | description), enums (name |
number | description) and services (method | request | response |
description).  The input is a descriptor set that ``grpc_tools.protoc`` builds
with ``--include_source_info``, so no extra binary is needed.

``tests/contract/test_reference_docs.py`` compares the committed
docs/reference.md with ``render(build_descriptor_set())`` and uses
``missing_comments()`` to require a comment on every declared element.

Usage: ``python scripts/gen_proto_docs.py [--out PATH] [--check]``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "docs" / "reference.md"

# Field numbers inside descriptor.proto, used in SourceCodeInfo paths.
_FILE_PACKAGE = 2
_FILE_MESSAGE = 4
_FILE_ENUM = 5
_FILE_SERVICE = 6
_FILE_SYNTAX = 12
_MESSAGE_FIELD = 2
_MESSAGE_NESTED = 3
_MESSAGE_ENUM = 4
_MESSAGE_ONEOF = 8
_ENUM_VALUE = 2
_SERVICE_METHOD = 2

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS: dict[int, str] = {
    _FDP.TYPE_DOUBLE: "double",
    _FDP.TYPE_FLOAT: "float",
    _FDP.TYPE_INT64: "int64",
    _FDP.TYPE_UINT64: "uint64",
    _FDP.TYPE_INT32: "int32",
    _FDP.TYPE_FIXED64: "fixed64",
    _FDP.TYPE_FIXED32: "fixed32",
    _FDP.TYPE_BOOL: "bool",
    _FDP.TYPE_STRING: "string",
    _FDP.TYPE_BYTES: "bytes",
    _FDP.TYPE_UINT32: "uint32",
    _FDP.TYPE_SFIXED32: "sfixed32",
    _FDP.TYPE_SFIXED64: "sfixed64",
    _FDP.TYPE_SINT32: "sint32",
    _FDP.TYPE_SINT64: "sint64",
}
_WELL_KNOWN_URL = "https://protobuf.dev/reference/protobuf/google.protobuf/#"

Path_ = tuple[int, ...]


# ---------------------------------------------------------------------------
# Descriptor set
# ---------------------------------------------------------------------------


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto of the module, relative to ``proto_root``, sorted."""
    return sorted(p.relative_to(proto_root) for p in proto_root.rglob("*.proto"))


def build_descriptor_set(proto_root: Path = PROTO_ROOT) -> descriptor_pb2.FileDescriptorSet:
    """Compile ``proto_root`` with source info (comments) into a FileDescriptorSet."""
    well_known = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptors.binpb"
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *(str(p) for p in proto_files(proto_root)),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


# ---------------------------------------------------------------------------
# Walking the declarations
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Comments:
    by_path: dict[Path_, descriptor_pb2.SourceCodeInfo.Location]

    @classmethod
    def of(cls, file: descriptor_pb2.FileDescriptorProto) -> _Comments:
        return cls({tuple(loc.path): loc for loc in file.source_code_info.location})

    def text(self, path: Path_) -> str:
        """The element's comment (leading, else trailing), one leading space per line removed."""
        loc = self.by_path.get(path)
        if loc is None:
            return ""
        raw = loc.leading_comments or loc.trailing_comments
        lines = [line[1:] if line.startswith(" ") else line for line in raw.split("\n")]
        return "\n".join(line.rstrip() for line in lines).strip("\n")

    def line(self, path: Path_) -> int:
        loc = self.by_path.get(path)
        return loc.span[0] + 1 if loc is not None and loc.span else 0


@dataclass(frozen=True)
class _Message:
    full_name: str  # without the leading dot, e.g. eventrouter.v1.UpdateEvent
    path: Path_
    proto: descriptor_pb2.DescriptorProto


@dataclass(frozen=True)
class _Enum:
    full_name: str
    path: Path_
    proto: descriptor_pb2.EnumDescriptorProto


def _walk_messages(
    messages: Sequence[descriptor_pb2.DescriptorProto], prefix: str, path: Path_
) -> Iterator[_Message]:
    for i, msg in enumerate(messages):
        full = f"{prefix}.{msg.name}" if prefix else msg.name
        here = (*path, i)
        if msg.options.map_entry:
            continue  # rendered inline as map<K, V>
        yield _Message(full, here, msg)
        yield from _walk_messages(msg.nested_type, full, (*here, _MESSAGE_NESTED))


def _messages(file: descriptor_pb2.FileDescriptorProto) -> list[_Message]:
    return list(_walk_messages(file.message_type, file.package, (_FILE_MESSAGE,)))


def _enums(file: descriptor_pb2.FileDescriptorProto) -> list[_Enum]:
    enums = [
        _Enum(f"{file.package}.{e.name}" if file.package else e.name, (_FILE_ENUM, i), e)
        for i, e in enumerate(file.enum_type)
    ]
    for msg in _messages(file):
        enums.extend(
            _Enum(f"{msg.full_name}.{e.name}", (*msg.path, _MESSAGE_ENUM, i), e)
            for i, e in enumerate(msg.proto.enum_type)
        )
    return enums


def _is_synthetic_oneof(msg: descriptor_pb2.DescriptorProto, index: int) -> bool:
    """A proto3 ``optional`` field sits alone in a synthetic oneof; it is not a real oneof."""
    return any(
        f.proto3_optional and f.oneof_index == index for f in msg.field if f.HasField("oneof_index")
    )


# ---------------------------------------------------------------------------
# Comment check
# ---------------------------------------------------------------------------


def missing_comments(fds: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Every message, field, oneof, enum, enum value, service and method without a comment."""
    missing: list[str] = []
    for file in fds.file:
        comments = _Comments.of(file)

        def need(
            path: Path_, what: str, file_name: str = file.name, c: _Comments = comments
        ) -> None:
            if not c.text(path).strip():
                missing.append(f"{file_name}:{c.line(path)}: {what} has no comment")

        for msg in _messages(file):
            need(msg.path, f"message {msg.full_name}")
            for i, field in enumerate(msg.proto.field):
                need((*msg.path, _MESSAGE_FIELD, i), f"field {msg.full_name}.{field.name}")
            for i, oneof in enumerate(msg.proto.oneof_decl):
                if not _is_synthetic_oneof(msg.proto, i):
                    need((*msg.path, _MESSAGE_ONEOF, i), f"oneof {msg.full_name}.{oneof.name}")
        for enum in _enums(file):
            need(enum.path, f"enum {enum.full_name}")
            for i, value in enumerate(enum.proto.value):
                need((*enum.path, _ENUM_VALUE, i), f"enum value {enum.full_name}.{value.name}")
        for s, service in enumerate(file.service):
            need((_FILE_SERVICE, s), f"service {file.package}.{service.name}")
            for m, method in enumerate(service.method):
                need((_FILE_SERVICE, s, _SERVICE_METHOD, m), f"rpc {service.name}.{method.name}")
    return missing


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------


def _anchor(full_name: str) -> str:
    return full_name.replace(".", "-")


def _file_anchor(name: str) -> str:
    return name.replace("/", "_").replace(".", "-")


def _cell(text: str) -> str:
    """Make a comment fit in one table cell: lines joined, paragraphs split by <br><br>."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip())]
    return "<br><br>".join(p for p in paragraphs if p).replace("|", "\\|")


def _block(text: str) -> str:
    """A multi-line comment as markdown; an indented run after a blank line becomes a code block."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    previous_blank = True
    while i < len(lines):
        line = lines[i]
        if previous_blank and line.startswith("  "):
            run: list[str] = []
            while i < len(lines) and (lines[i].startswith("  ") or not lines[i].strip()):
                run.append(lines[i])
                i += 1
            while run and not run[-1].strip():
                run.pop()
            indent = min(len(r) - len(r.lstrip()) for r in run if r.strip())
            out.extend(["```", *(r[indent:] for r in run), "```", ""])
            previous_blank = True
            continue
        out.append(line)
        previous_blank = not line.strip()
        i += 1
    return "\n".join(out).strip("\n")


class _Renderer:
    def __init__(self, fds: descriptor_pb2.FileDescriptorSet) -> None:
        self.fds = fds
        self.local: set[str] = set()
        self.map_entries: dict[str, descriptor_pb2.DescriptorProto] = {}
        for file in fds.file:
            self._index(file.message_type, file.package)
            self.local.update(e.full_name for e in _enums(file))

    def _index(self, messages: Sequence[descriptor_pb2.DescriptorProto], prefix: str) -> None:
        for msg in messages:
            full = f"{prefix}.{msg.name}" if prefix else msg.name
            if msg.options.map_entry:
                self.map_entries[full] = msg
            else:
                self.local.add(full)
            self._index(msg.nested_type, full)

    def type_ref(self, type_name: str, package: str) -> str:
        """A markdown link to a message or enum type, named relative to ``package``."""
        full = type_name.lstrip(".")
        shown = full[len(package) + 1 :] if package and full.startswith(package + ".") else full
        if full in self.local:
            return f"[{shown}](#{_anchor(full)})"
        if full.startswith("google.protobuf."):
            return f"[{shown}]({_WELL_KNOWN_URL}{full.rsplit('.', 1)[1].lower()})"
        return f"`{shown}`"

    def field_type(self, field: descriptor_pb2.FieldDescriptorProto, package: str) -> str:
        if field.type in _SCALARS:
            return f"`{_SCALARS[field.type]}`"
        entry = self.map_entries.get(field.type_name.lstrip("."))
        if entry is not None:
            key, value = entry.field[0], entry.field[1]
            return f"map<{self.field_type(key, package)}, {self.field_type(value, package)}>"
        return self.type_ref(field.type_name, package)

    def label(
        self,
        field: descriptor_pb2.FieldDescriptorProto,
        msg: descriptor_pb2.DescriptorProto,
        syntax: str,
    ) -> str:
        if field.label == _FDP.LABEL_REPEATED:
            # A map is a repeated entry message; its type column already says map<K, V>.
            return "" if field.type_name.lstrip(".") in self.map_entries else "repeated"
        if field.label == _FDP.LABEL_REQUIRED:
            return "required"
        if field.proto3_optional:
            return "optional"
        if field.HasField("oneof_index"):
            return f"oneof `{msg.oneof_decl[field.oneof_index].name}`"
        if syntax in ("", "proto2"):
            return "optional"
        return ""

    def render(self) -> str:
        files = sorted(self.fds.file, key=lambda f: f.name)
        out: list[str] = [
            "<!-- Generated by scripts/gen_proto_docs.py from protos/ (`make docs`); "
            "do not edit by hand. -->",
            "",
            "# Protocol Documentation",
            '<a name="top"></a>',
            "",
            "## Table of Contents",
            "",
        ]
        for file in files:
            out.append(f"- [{file.name}](#{_file_anchor(file.name)})")
            for msg in _messages(file):
                out.append(f"    - [{self._short(msg.full_name, file)}](#{_anchor(msg.full_name)})")
            for enum in _enums(file):
                out.append(
                    f"    - [{self._short(enum.full_name, file)}](#{_anchor(enum.full_name)})"
                )
            for service in file.service:
                full = f"{file.package}.{service.name}"
                out.append(f"    - [{service.name}](#{_anchor(full)})")
        out.append("")
        for file in files:
            out.extend(self._file(file))
        return "\n".join(out).rstrip("\n") + "\n"

    @staticmethod
    def _short(full_name: str, file: descriptor_pb2.FileDescriptorProto) -> str:
        prefix = file.package + "." if file.package else ""
        return full_name[len(prefix) :] if full_name.startswith(prefix) else full_name

    def _file(self, file: descriptor_pb2.FileDescriptorProto) -> list[str]:
        comments = _Comments.of(file)
        out = [
            f'<a name="{_file_anchor(file.name)}"></a>',
            '<p align="right"><a href="#top">Top</a></p>',
            "",
            f"## {file.name}",
            "",
        ]
        description = comments.text((_FILE_PACKAGE,)) or comments.text((_FILE_SYNTAX,))
        if description:
            out.extend([_block(description), ""])
        out.append(f"Package: `{file.package}`")
        out.append("")
        for msg in _messages(file):
            out.extend(self._message(file, comments, msg))
        for enum in _enums(file):
            out.extend(self._enum(file, comments, enum))
        for s, service in enumerate(file.service):
            out.extend(self._service(file, comments, s, service))
        return out

    def _heading(self, full_name: str, file: descriptor_pb2.FileDescriptorProto) -> list[str]:
        return [f'<a name="{_anchor(full_name)}"></a>', "", f"### {self._short(full_name, file)}"]

    def _message(
        self, file: descriptor_pb2.FileDescriptorProto, comments: _Comments, msg: _Message
    ) -> list[str]:
        out = self._heading(msg.full_name, file)
        out.append("")
        if text := comments.text(msg.path):
            out.extend([_block(text), ""])
        if not msg.proto.field:
            out.extend(["This message has no fields.", ""])
            return out
        out.extend(
            ["| Field | Type | Label | Description |", "| ----- | ---- | ----- | ----------- |"]
        )
        for i, field in enumerate(msg.proto.field):
            description = _cell(comments.text((*msg.path, _MESSAGE_FIELD, i)))
            ftype = self.field_type(field, file.package)
            label = self.label(field, msg.proto, file.syntax)
            out.append(f"| {field.name} | {ftype} | {label} | {description} |")
        out.append("")
        oneofs = [
            (i, oneof)
            for i, oneof in enumerate(msg.proto.oneof_decl)
            if not _is_synthetic_oneof(msg.proto, i)
        ]
        for i, oneof in oneofs:
            text = _cell(comments.text((*msg.path, _MESSAGE_ONEOF, i)))
            out.append(f"- oneof `{oneof.name}`: {text}".rstrip())
        if oneofs:
            out.append("")
        return out

    def _enum(
        self, file: descriptor_pb2.FileDescriptorProto, comments: _Comments, enum: _Enum
    ) -> list[str]:
        out = self._heading(enum.full_name, file)
        out.append("")
        if text := comments.text(enum.path):
            out.extend([_block(text), ""])
        out.extend(["| Name | Number | Description |", "| ---- | ------ | ----------- |"])
        for i, value in enumerate(enum.proto.value):
            description = _cell(comments.text((*enum.path, _ENUM_VALUE, i)))
            out.append(f"| {value.name} | {value.number} | {description} |")
        out.append("")
        return out

    def _service(
        self,
        file: descriptor_pb2.FileDescriptorProto,
        comments: _Comments,
        index: int,
        service: descriptor_pb2.ServiceDescriptorProto,
    ) -> list[str]:
        path: Path_ = (_FILE_SERVICE, index)
        out = self._heading(f"{file.package}.{service.name}", file)
        out.append("")
        if text := comments.text(path):
            out.extend([_block(text), ""])
        out.extend(
            [
                "| Method Name | Request Type | Response Type | Description |",
                "| ----------- | ------------ | ------------- | ----------- |",
            ]
        )
        for m, method in enumerate(service.method):
            request = self.type_ref(method.input_type, file.package)
            response = self.type_ref(method.output_type, file.package)
            if method.client_streaming:
                request = f"stream {request}"
            if method.server_streaming:
                response = f"stream {response}"
            description = _cell(comments.text((*path, _SERVICE_METHOD, m)))
            out.append(f"| {method.name} | {request} | {response} | {description} |")
        out.append("")
        return out


def render(fds: descriptor_pb2.FileDescriptorSet) -> str:
    """The whole reference document for ``fds``."""
    return _Renderer(fds).render()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where to write (default: %(default)s)"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from a fresh render"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    text = render(build_descriptor_set())
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else ""
        if current != text:
            print(f"{out} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
