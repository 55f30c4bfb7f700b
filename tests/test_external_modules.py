"""The `external` subset (.ci/run against Debian's PostgreSQL and Redis) is what
tests/conftest.py EXTERNAL_MODULES names: a renamed or moved module cannot drop out silently."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import BASE_DIR_FOR_TESTS, EXTERNAL_MODULES

TESTS = BASE_DIR_FOR_TESTS / "tests"


@pytest.mark.parametrize("module", EXTERNAL_MODULES)
def test_every_external_module_exists(module):
    path = TESTS / module

    assert path.is_file(), f"tests/{module} is in EXTERNAL_MODULES but does not exist"
    assert path.name.startswith("test_") and path.suffix == ".py"


def test_external_modules_are_listed_once():
    assert len(set(EXTERNAL_MODULES)) == len(EXTERNAL_MODULES)


def test_marker_selects_every_listed_module_and_nothing_else():
    # given the listed modules and one that is not listed
    unlisted = "test_index.py"
    assert unlisted not in EXTERNAL_MODULES
    paths = [f"tests/{module}" for module in (*EXTERNAL_MODULES, unlisted)]

    # when pytest collects them with `-m external`, as .ci/run does
    argv = ["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "external"]
    collected = subprocess.run(
        [sys.executable, *argv, *paths],
        cwd=BASE_DIR_FOR_TESTS,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # then every listed module has tests selected, and the unlisted one none
    assert collected.returncode == 0, collected.stdout + collected.stderr
    selected = {line.split("::")[0] for line in collected.stdout.splitlines() if "::" in line}
    assert selected == {f"tests/{module}" for module in EXTERNAL_MODULES}
