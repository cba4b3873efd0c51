"""docs/reference.md is rendered from the .proto comments, and every element has one."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

from tests.contract._support import PROTO_ROOT, ROOT, load_script

REFERENCE = ROOT / "docs" / "reference.md"


@pytest.fixture(scope="module")
def docs() -> ModuleType:
    return load_script("gen_proto_docs")


@pytest.fixture(scope="module")
def descriptors(docs: ModuleType) -> descriptor_pb2.FileDescriptorSet:
    fds: descriptor_pb2.FileDescriptorSet = docs.build_descriptor_set()
    return fds


def test_reference_docs_are_up_to_date(
    docs: ModuleType, descriptors: descriptor_pb2.FileDescriptorSet
) -> None:
    fresh: str = docs.render(descriptors)
    assert REFERENCE.exists(), "docs/reference.md is missing: run `make docs`"
    committed = REFERENCE.read_text(encoding="utf-8")
    if committed != fresh:
        diff = list(
            difflib.unified_diff(
                committed.splitlines(), fresh.splitlines(), "committed", "fresh", lineterm=""
            )
        )
        pytest.fail("docs/reference.md is stale: run `make docs`\n" + "\n".join(diff[:40]))


def test_every_element_has_a_comment(
    docs: ModuleType, descriptors: descriptor_pb2.FileDescriptorSet
) -> None:
    missing: list[str] = docs.missing_comments(descriptors)
    assert not missing, (
        "every message, field, oneof, enum, enum value, service and rpc in protos/ needs a "
        "comment (it becomes docs/reference.md):\n" + "\n".join(missing)
    )


def test_reference_documents_every_declaration(
    descriptors: descriptor_pb2.FileDescriptorSet,
) -> None:
    text = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    absent = [
        f"{file.name}: {name}"
        for file in descriptors.file
        for name in [
            *(m.name for m in file.message_type),
            *(e.name for e in file.enum_type),
            *(s.name for s in file.service),
        ]
        if f"### {name}\n" not in text
    ]
    assert not absent, "not in docs/reference.md (run `make docs`):\n" + "\n".join(absent)


def test_missing_comment_is_reported(docs: ModuleType, tmp_path: Path) -> None:
    """Control for the comment check: removing one field's comment is caught."""
    module = tmp_path / "protos"
    shutil.copytree(PROTO_ROOT, module)
    events = module / "eventrouter" / "v1" / "events.proto"
    text = events.read_text(encoding="utf-8")
    comment = "  // Whether the daemon is online.\n"
    assert text.count(comment) == 1, "update this test"
    events.write_text(text.replace(comment, ""), encoding="utf-8")

    missing: list[str] = docs.missing_comments(docs.build_descriptor_set(module))
    assert any("field eventrouter.v1.MachineStatus.online" in m for m in missing), missing
