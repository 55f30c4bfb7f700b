"""Imports flow one way: carts <- campaigns <- recovery <- dashboards, and carts <- campaigns <-
integrations; config is the only place that knows all."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "carts": {"campaigns", "recovery", "dashboards", "integrations", "config"},
    "campaigns": {"recovery", "dashboards", "integrations", "config"},
    "recovery": {"dashboards", "integrations", "config"},
    "dashboards": {"integrations", "config"},
    # Shop platforms sit on carts and campaigns, beside recovery; they reach campaigns through
    # its extension points (campaigns/extensions.py).
    "integrations": {"recovery", "dashboards", "config"},
}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_app_imports_flow_one_way(app):
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_top_levels(path) & FORBIDDEN[app])
        for path in (ROOT / app).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("from recovery.scoring import score\nimport campaigns.models\n")
    assert _imported_top_levels(sample) == {"recovery", "campaigns"}
