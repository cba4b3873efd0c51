"""The committed locks (requirements/*.txt, package-lock.json) agree with what they lock.

A fresh clone installs only from the locks, so a dependency added to or
changed in pyproject.toml without ``make lock`` would silently not be
installed (or be installed at a version outside its range).  These checks
fail first, with the command that fixes it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.contract._support import ROOT, load_script

RELOCK = "pyproject.toml and requirements/{name} disagree: run `make lock`"
lock_script = load_script("lock")
LOCK_NAMES: list[str] = list(lock_script.LOCK_SETS)
# A pinned line of a lock: "name==version ; marker \".
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


@dataclass(frozen=True)
class Pin:
    version: Version
    marker: Marker | None
    hashes: int


def _read_lock(name: str) -> tuple[str | None, dict[str, Pin]]:
    """The lock's fingerprint line and its pins by canonical name."""
    fingerprint = None
    pins: dict[str, Pin] = {}
    current: str | None = None
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        if line.startswith(lock_script.FINGERPRINT_PREFIX):
            fingerprint = line.removeprefix(lock_script.FINGERPRINT_PREFIX).strip()
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match[1])
            marker = Marker(match[3]) if match[3] else None
            pins[current] = Pin(Version(match[2]), marker, 0)
        elif line.strip().startswith("--hash=sha256:") and current is not None:
            pin = pins[current]
            pins[current] = Pin(pin.version, pin.marker, pin.hashes + 1)
    return fingerprint, pins


@pytest.mark.parametrize("name", LOCK_NAMES)
def test_lock_was_made_from_the_current_pyproject(name: str) -> None:
    fingerprint, _ = _read_lock(name)
    requirements = lock_script.requirements_of(lock_script.load_pyproject(), name)
    assert fingerprint == lock_script.fingerprint(requirements), RELOCK.format(name=name)


@pytest.mark.parametrize("name", LOCK_NAMES)
def test_every_requirement_is_pinned_within_its_range_with_hashes(name: str) -> None:
    _, pins = _read_lock(name)
    requirements = lock_script.requirements_of(lock_script.load_pyproject(), name)
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement.name} is not in the lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement.name}=={pin.version} is outside {requirement.specifier}")
    problems += [f"{n} has no hash" for n, pin in pins.items() if pin.hashes == 0]
    assert not problems, RELOCK.format(name=name) + "\n" + "\n".join(problems)


def test_shared_packages_have_one_pin_in_every_lock() -> None:
    """bench.txt installs over dev.txt: a package pinned differently would flip between them."""
    seen: dict[str, tuple[Version, str]] = {}
    problems = []
    for name in LOCK_NAMES:
        for package, pin in _read_lock(name)[1].items():
            first = seen.setdefault(package, (pin.version, name))
            if first[0] != pin.version:
                problems.append(f"{package}: {first[0]} in {first[1]}, {pin.version} in {name}")
    assert not problems, "run `make lock`:\n" + "\n".join(problems)


def test_installed_environment_is_the_dev_lock() -> None:
    """What this suite runs on is what a fresh clone installs (catches a stale .venv)."""
    if os.environ.get("UNLOCKED_DEPENDENCIES") == "1":
        pytest.skip("make test-latest runs on the newest releases, not the lock")
    _, pins = _read_lock("dev.txt")
    problems = []
    for package, pin in pins.items():
        if pin.marker is not None and not pin.marker.evaluate():
            continue
        try:
            installed = Version(metadata.version(package))
        except metadata.PackageNotFoundError:
            problems.append(f"{package}=={pin.version} is not installed")
            continue
        if installed != pin.version:
            problems.append(f"{package}: {installed} installed, {pin.version} locked")
    assert not problems, "the venv is not the lock: run `make venv`\n" + "\n".join(problems)


def _package_jsons() -> list[Path]:
    skip = {"node_modules", ".git", ".venv", ".venv-latest", "build", "dist"}
    found = []
    for path in ROOT.rglob("package.json"):
        if not skip.intersection(path.relative_to(ROOT).parts):
            found.append(path)
    return sorted(found)


def test_repository_has_npm_packages() -> None:
    assert _package_jsons(), "found no package.json: the npm check below would check nothing"


@pytest.mark.parametrize("package_json", _package_jsons(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_package_json_is_locked(package_json: Path) -> None:
    lock_path = package_json.with_name("package-lock.json")
    where = package_json.parent.relative_to(ROOT)
    assert lock_path.exists(), f"{where}: no package-lock.json; run `npm install` there"
    manifest = json.loads(package_json.read_text())
    root = json.loads(lock_path.read_text())["packages"][""]
    for section in ("dependencies", "devDependencies", "optionalDependencies"):
        assert manifest.get(section, {}) == root.get(section, {}), (
            f"{where}/package-lock.json is stale for {section}: run `npm install` there"
        )
