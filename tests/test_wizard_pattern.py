"""The wizard's missing-data pattern: counted while the CSV streams in, ordered by
``federation.diagnostics.md_pattern``'s rules, the most frequent shown; through the real route."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from federation.data import read_csv
from federation.diagnostics import MissingPattern, md_pattern
from portal_central.jobs import header
from portal_central.jobs.header import SHOWN_PATTERNS, HeaderReader
from tests.central_fixtures import ADMIN, browser_sign_in, htmx_headers
from tests.r_reference import run_r
from tests.test_central_wizard import _wizard_form

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


Rows = list[tuple[int, list[str], int]]


@dataclass(frozen=True)
class Shown:
    columns: list[str]
    rows: Rows
    footer: list[int]


def _shown(central: TestClient, path: Path) -> tuple[Shown, str]:
    """The pattern table the columns step shows for ``path``, and the text under it."""
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    response = central.post(
        "/jobs/new/columns",
        data={"algorithm": "SIMICE"},
        files={"header_file": (path.name, path.read_bytes(), "text/csv")},
        headers=htmx_headers(csrf),
    )
    assert response.status_code == 200, response.text
    section = BeautifulSoup(response.text, "html.parser").select_one("section.md-pattern")
    assert section is not None, "no pattern table"
    columns = [th.get_text() for th in section.select("thead th")][1:-1]
    rows: Rows = []
    for tr in section.select("tbody tr"):
        cells = [td.get_text() for td in tr.select("td")]
        rows.append((int(tr.select("th")[0].get_text()), cells[:-1], int(cells[-1])))
    footer = [int(td.get_text()) for td in section.select("tfoot td")]
    return Shown(columns, rows, footer), section.get_text(" ", strip=True)


def _expected(pattern: MissingPattern) -> Shown:
    return Shown(
        columns=list(pattern.columns),
        rows=[
            (count, ["1" if seen else "0" for seen in row], missing)
            for count, row, missing in zip(
                pattern.counts, pattern.observed, pattern.missing_per_pattern, strict=True
            )
        ],
        footer=[*pattern.missing_per_column, pattern.total_missing],
    )


def _of_file(path: Path) -> MissingPattern:
    table = read_csv(path)
    return md_pattern(table.columns, np.isnan(table.values))


@SQLITE
def test_the_wizard_shows_md_pattern_of_the_uploaded_file(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    shown, text = _shown(central, demo_files["central"])
    assert shown == _expected(_of_file(demo_files["central"]))
    assert "more pattern" not in text


def _many_patterns(path: Path, rows: int = 3000) -> Path:
    rng = np.random.default_rng(3)
    values = rng.normal(size=(rows, 7)).round(3)
    values[rng.random(values.shape) < np.linspace(0.05, 0.5, 7)] = np.nan
    pd.DataFrame(values, columns=[f"v{k}" for k in range(7)]).to_csv(path, index=False)
    return path


@SQLITE
def test_the_wizard_shows_the_most_frequent_patterns_and_counts_the_rest(
    central: TestClient, tmp_path: Path
) -> None:
    path = _many_patterns(tmp_path / "wide.csv")
    full = _of_file(path)
    assert len(full.counts) > SHOWN_PATTERNS
    shown, text = _shown(central, path)
    top = sorted(range(len(full.counts)), key=lambda k: -full.counts[k])[:SHOWN_PATTERNS]
    assert shown.rows == [r for k, r in enumerate(_expected(full).rows) if k in top]
    assert shown.footer == _expected(full).footer  # margins of the whole file
    left = len(full.counts) - SHOWN_PATTERNS
    rows_left = full.rows - sum(full.counts[k] for k in top)
    assert f"and {left} more patterns covering {rows_left} rows." in text


def test_patterns_are_counted_across_blocks(tmp_path: Path) -> None:
    path = _many_patterns(tmp_path / "wide.csv", rows=500)
    reader = HeaderReader(label="wide.csv")
    content = path.read_bytes()
    for start in range(0, len(content), 997):  # blocks that split lines
        reader.feed(content[start : start + 997])
    reader.finish()
    counted = reader.missing_pattern()
    assert counted is not None and counted.to_dict() == _of_file(path).to_dict()


def test_a_file_of_ever_new_patterns_stops_counting_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(header, "MAX_PATTERNS", 5)
    path = _many_patterns(tmp_path / "wide.csv", rows=400)
    reader = HeaderReader(label="wide.csv")
    reader.feed(path.read_bytes())
    reader.finish()
    counted = reader.missing_pattern()
    assert counted is not None and len(counted.counts) == 5
    assert counted.rows + reader.uncounted_rows == 400 and reader.uncounted_rows > 0
    view = header.pattern_view(reader, limit=3)
    assert view["more_patterns"] == 2 and view["uncounted_rows"] == reader.uncounted_rows


R_BOYS = r"""
suppressMessages(library(mice))
write.csv(data.matrix(boys), "boys.csv", row.names = FALSE, na = "")
"""


@pytest.mark.slow
@SQLITE
def test_the_wizard_pattern_of_boys_equals_md_pattern(central: TestClient, tmp_path: Path) -> None:
    """R mice's boys (factors as their codes), uploaded to the wizard."""
    run_r(R_BOYS, cwd=tmp_path)
    shown, _ = _shown(central, tmp_path / "boys.csv")
    assert shown == _expected(_of_file(tmp_path / "boys.csv"))
    assert shown.columns[:2] == ["age", "reg"]


def _pattern_of(html: str) -> tuple[str, str] | None:
    """The pattern section's text and its hidden field, if the page has one."""
    section = BeautifulSoup(html, "html.parser").select_one("section.md-pattern")
    if section is None:
        return None
    hidden = section.select_one("input[name=pattern_json]")
    assert hidden is not None
    return section.get_text(" ", strip=True), str(hidden["value"])


@SQLITE
def test_the_pattern_stays_when_the_form_comes_back_with_an_error(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    path = demo_files["central"]
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    step = central.post(
        "/jobs/new/columns",
        data={"algorithm": "SIMICE"},
        files={"header_file": (path.name, path.read_bytes(), "text/csv")},
        headers=htmx_headers(csrf),
    )
    shown = _pattern_of(step.text)
    assert shown is not None
    form = _wizard_form(central, csrf, path) | {"name": " ", "pattern_json": shown[1]}
    again = central.post("/jobs", data=form, follow_redirects=False)
    assert again.status_code == 422
    assert _pattern_of(again.text) == shown

    other = json.loads(shown[1])
    other["pattern"]["columns"][0] = "weight"  # not this form's columns
    for tampered in ("{}", "not json", json.dumps(other), shown[1].replace("true", '"x"', 1)):
        response = central.post("/jobs", data=form | {"pattern_json": tampered})
        assert response.status_code == 422, tampered
        assert _pattern_of(response.text) is None, tampered
