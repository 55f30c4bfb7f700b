"""The import contracts in .importlinter (layers, edges, no cycles) hold on the tree, and each one
catches a violation planted in a copy of the packages.

lint-imports runs in a subprocess: it finds the root packages through the import system, and in
this process they are already imported from the checkout. In the copy's directory (its cwd comes
first on the path) it analyses the copy. No cache is written anywhere.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contract_names() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    prefix = "importlinter:contract:"
    return {
        section.removeprefix(prefix): parser[section]["name"]
        for section in parser.sections()
        if section.startswith(prefix)
    }


CONTRACTS = _contract_names()


def _root_packages() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return parser["importlinter"]["root_packages"].split()


def _lint(cwd: Path) -> tuple[int, dict[str, str], str]:
    """Run the contracts with cwd as the project; returns the exit code, each contract's verdict
    by name (KEPT or BROKEN) and the report."""
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(CONFIG)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        # Wide enough that no contract's name is wrapped onto a second line.
        env={**os.environ, "COLUMNS": "300", "NO_COLOR": "1"},
    )
    verdicts = dict(re.findall(r"^(.+?) (KEPT|BROKEN)\b", result.stdout, flags=re.MULTILINE))
    assert set(verdicts) == set(CONTRACTS.values()), result.stdout + result.stderr
    return result.returncode, verdicts, result.stdout


def _not_python(directory: str, names: list[str]) -> list[str]:
    """What copytree leaves out: caches, and files other than Python sources."""
    return [
        name
        for name in names
        if name == "__pycache__"
        or (not name.endswith(".py") and not (Path(directory) / name).is_dir())
    ]


def _copy_packages(destination: Path) -> None:
    """The root packages' Python files, as they are in the checkout now."""
    for package in _root_packages():
        shutil.copytree(ROOT / package, destination / package, ignore=_not_python)


def test_the_tree_keeps_every_contract():
    code, verdicts, _ = _lint(ROOT)

    assert verdicts == {name: "KEPT" for name in CONTRACTS.values()}
    assert code == 0


# Plants: new modules (nothing imports them, so each can break only the contract it aims at),
# one run of lint-imports per kind of contract. Each plant is (path, source, contract id).
LAYER_PLANTS = [
    # The apps' layers, downwards only.
    ("carts/planted_1.py", "import dashboards\n", "apps"),
    ("carts/planted_2.py", "from campaigns import models\n", "apps"),
    ("campaigns/planted_1.py", "import recovery.models\n", "apps"),
    ("recovery/planted_1.py", "from dashboards import selectors\n", "apps"),
    # config knows every app; no app knows config.
    ("carts/planted_3.py", "from config import env\n", "apps"),
    ("dashboards/planted_1.py", "import config.env\n", "apps"),
    # recovery and integrations sit side by side; a lazy import counts like any other.
    ("recovery/planted_2.py", "def f():\n    import integrations.codes\n", "apps"),
    ("integrations/planted_1.py", "def f():\n    from recovery import offers\n", "apps"),
    ("dashboards/planted_2.py", "from integrations import selectors\n", "dashboards-integrations"),
]
EDGE_PLANTS = [
    # Only URLconfs and routing import API, view and consumer modules.
    ("carts/planted_1.py", "from carts import apis\n", "edges"),
    ("campaigns/planted_1.py", "import campaigns.views\n", "edges"),
    ("dashboards/planted_1.py", "from recovery.consumers import ShopperConsumer\n", "edges"),
    ("dashboards/simulator/planted_1.py", "from dashboards import apis\n", "edges"),
    (
        "integrations/planted_1.py",
        "def f():\n    from integrations import endpoint_apis\n",
        "edges",
    ),
]
CYCLE_PACKAGES = [
    "carts",
    "campaigns",
    "recovery",
    "dashboards.selectors",
    "integrations.platforms",
    "config",
]


def _module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _sections(report: str) -> dict[str, str]:
    """The report of each broken contract, by contract name."""
    names = "|".join(re.escape(name) for name in CONTRACTS.values())
    broken = report.partition("Broken contracts")[2]
    parts = re.split(rf"^({names})\n-+\n", broken, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("plants", [LAYER_PLANTS, EDGE_PLANTS], ids=["layers", "edges"])
def test_planted_imports_break_their_contracts(tmp_path, plants):
    _copy_packages(tmp_path)
    for path, source, _ in plants:
        (tmp_path / path).write_text(source)

    code, verdicts, report = _lint(tmp_path)

    contracts = {CONTRACTS[contract] for _, _, contract in plants}
    assert {name for name, verdict in verdicts.items() if verdict == "BROKEN"} == contracts
    sections = _sections(report)
    assert set(sections) == contracts
    for path, _, contract in plants:
        importer = re.compile(rf"^-\s+{re.escape(_module(path))} -> ", re.MULTILINE)
        naming = {name for name, text in sections.items() if importer.search(text)}
        assert naming == {CONTRACTS[contract]}, path
    assert code == 1


def test_planted_cycles_break_the_acyclic_contract(tmp_path):
    _copy_packages(tmp_path)
    for package in CYCLE_PACKAGES:
        directory = tmp_path / package.replace(".", "/")
        (directory / "planted_a.py").write_text(f"from {package} import planted_b\n")
        # The way back is a lazy import inside a function: it closes the cycle all the same.
        (directory / "planted_b.py").write_text(f"def f():\n    from {package} import planted_a\n")

    code, verdicts, report = _lint(tmp_path)

    assert {name for name, verdict in verdicts.items() if verdict == "BROKEN"} == {
        CONTRACTS["acyclic"]
    }
    section = _sections(report)[CONTRACTS["acyclic"]]
    assert sorted(
        re.findall(r"No cycles are allowed in (\S+)\.$", section, re.MULTILINE)
    ) == sorted(CYCLE_PACKAGES)
    assert section.count("- .planted_") == len(CYCLE_PACKAGES)
    assert code == 1


def test_an_untouched_copy_keeps_every_contract(tmp_path):
    """The plants above are what break the copies."""
    _copy_packages(tmp_path)

    code, verdicts, _ = _lint(tmp_path)

    assert verdicts == {name: "KEPT" for name in CONTRACTS.values()}
    assert code == 0
