"""Check what the wheel of ``make dist`` holds (built once per session: conftest.py).

setuptools silently drops a subpackage missing from ``[tool.setuptools]
packages``, so the expected contents are computed from the source tree: a new
module under client/eventrouter or server/eventrouter that the wheel lacks
fails here.
"""

from __future__ import annotations

import configparser
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.packaging.conftest import Dist

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (ROOT / "client", ROOT / "server")
NAMESPACE = "eventrouter"
CONSOLE_SCRIPT = "eventrouter"


@dataclass(frozen=True)
class Wheel:
    path: Path
    names: frozenset[str]
    dist_info: str  # e.g. eventrouter-0.1.0.dist-info

    def read(self, name: str) -> str:
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(name).decode("utf-8")


@pytest.fixture(scope="module")
def wheel(dist: Dist) -> Wheel:
    with zipfile.ZipFile(dist.wheel) as zf:
        names = frozenset(zf.namelist())
    dist_infos = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    assert len(dist_infos) == 1, dist_infos
    return Wheel(dist.wheel, names, dist_infos.pop())


def _expected_files() -> set[str]:
    """Every module, stub and py.typed of the source tree, as paths inside the wheel."""
    expected: set[str] = set()
    for root in SOURCE_ROOTS:
        for path in (root / NAMESPACE).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in {".py", ".pyi"} or path.name == "py.typed":
                expected.add(path.relative_to(root).as_posix())
    return expected


def test_wheel_contains_every_module(wheel: Wheel) -> None:
    expected = _expected_files()
    assert any(name.endswith("_pb2.py") for name in expected), "source tree scan found no modules"
    missing = sorted(expected - wheel.names)
    assert not missing, (
        "the wheel lacks these source files (list the package in [tool.setuptools] packages "
        "and package-dir in pyproject.toml):\n" + "\n".join(missing)
    )


def test_wheel_has_stubs_and_py_typed(wheel: Wheel) -> None:
    # The packages directly under the namespace (eventrouter.v1, .client, .server) each need
    # a py.typed marker; their subpackages inherit it.
    packages = sorted(
        {
            "/".join(n.split("/")[:2])
            for n in wheel.names
            if n.startswith(f"{NAMESPACE}/") and n.count("/") >= 2
        }
    )
    assert packages, "no eventrouter.* package in the wheel"
    no_marker = [p for p in packages if f"{p}/py.typed" not in wheel.names]
    assert not no_marker, f"packages without py.typed (PEP 561): {no_marker}"
    generated = [n for n in wheel.names if n.endswith(("_pb2.py", "_pb2_grpc.py"))]
    assert generated, "no generated *_pb2 modules in the wheel"
    no_stub = [n for n in generated if f"{n}i" not in wheel.names]
    assert not no_stub, f"generated modules without their .pyi stub: {no_stub}"


def test_wheel_has_no_top_level_client_or_server(wheel: Wheel) -> None:
    top = {name.split("/", 1)[0] for name in wheel.names}
    assert {"client", "server", "client.py", "server.py"}.isdisjoint(top), sorted(top)
    assert top == {NAMESPACE, wheel.dist_info}, (
        f"the wheel may only install the `{NAMESPACE}` namespace, got {sorted(top)}"
    )
    assert f"{NAMESPACE}/__init__.py" not in wheel.names, (
        f"`{NAMESPACE}` must stay a namespace package (no __init__.py): "
        "client/ and server/ share it"
    )
    top_level = f"{wheel.dist_info}/top_level.txt"
    if top_level in wheel.names:
        listed = set(wheel.read(top_level).split())
        assert {"client", "server"}.isdisjoint(listed), listed


def test_console_script_is_declared(wheel: Wheel) -> None:
    entry_points = f"{wheel.dist_info}/entry_points.txt"
    assert entry_points in wheel.names, "the wheel declares no entry points"
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(wheel.read(entry_points))
    assert parser.has_option("console_scripts", CONSOLE_SCRIPT), (
        f"no `{CONSOLE_SCRIPT}` console script in [project.scripts]"
    )
    target = parser.get("console_scripts", CONSOLE_SCRIPT).strip()
    module, _, attr = target.partition(":")
    assert module, f"entry point {target!r} is not `module:function`"
    assert attr, f"entry point {target!r} is not `module:function`"
    module_file = module.replace(".", "/")
    assert {f"{module_file}.py", f"{module_file}/__init__.py"} & wheel.names, (
        f"entry point {target!r} names a module the wheel does not contain"
    )
