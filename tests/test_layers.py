"""Imports point one way in central: the JSON API and the pages share services, never each
other's routes, and the job services build no HTTP responses (issue #13). Read from the source
(each module's import statements), so a test process that loaded everything does not hide one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "portal_central"
WEB = ("fastapi", "starlette", "sse_starlette")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, by its full dotted name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _offenders(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {
        str(path.relative_to(ROOT.parent)): sorted(
            name
            for name in _imports(path)
            if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        for path in paths
    }
    return {path: names for path, names in found.items() if names}


def test_the_json_api_imports_nothing_from_the_pages() -> None:
    api = sorted((ROOT / "api").glob("*.py"))
    assert api, "the API's modules moved: point this test at them"
    assert _offenders(api, ("portal_central.web",)) == {}


def test_the_job_services_and_account_actions_import_no_web_framework() -> None:
    services = sorted((ROOT / "jobs").glob("*.py")) + [ROOT / "accounts" / "actions.py"]
    assert _offenders(services, WEB) == {}


def test_the_check_finds_what_it_looks_for() -> None:
    """The pages do import the web framework and the API's neighbours: the check sees them."""
    assert _offenders([ROOT / "web" / "admin.py"], WEB) != {}
    assert _offenders([ROOT / "web" / "jobs.py"], ("portal_central.intake",)) != {}
