"""The job wizard and the job page, as a browser sees them (session cookie, CSRF, HTMX)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bs4 import BeautifulSoup, Tag
from fastapi.testclient import TestClient

from algorithms.methods import METHODS
from federation.data import read_csv
from federation.demo import COLUMNS
from federation.job import JobEvent
from federation.registry import Registry
from tests.central_fixtures import (
    ADMIN,
    SITE_PASSWORD,
    admin_auth,
    approved_site,
    browser_sign_in,
    chained_algorithm,
    htmx_headers,
    meandraw_files,
    portal_state,
    upload_algorithm,
)

BINARY = {"sex", "smoker"}


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def _one(soup: BeautifulSoup | Tag, selector: str) -> Tag:
    found = soup.select_one(selector)
    assert found is not None, f"nothing matches {selector!r}"
    return found


def _admin(central: TestClient) -> str:
    return browser_sign_in(central, ADMIN["username"], ADMIN["password"])


def _columns_step(
    central: TestClient, csrf: str, path: Path, algorithm: str = "SIMICE"
) -> tuple[int, str]:
    response = central.post(
        "/jobs/new/columns",
        data={"algorithm": algorithm} if algorithm else {},
        files={"header_file": (path.name, path.read_bytes(), "text/csv")},
        headers=htmx_headers(csrf),
    )
    return response.status_code, response.text


def _parameter_inputs(html: str) -> dict[str, Tag]:
    return {
        str(field["name"]): field
        for field in _soup(html).select("input")
        if str(field.get("name", "")).startswith("param:")
    }


def _summary(path: Path) -> list[dict[str, Any]]:
    """What the columns step keeps of a CSV: per column its name and counts, and the
    distinct values of a column of few integer codes (a categorical target's default levels)."""
    table = read_csv(path)
    holes = np.isnan(table.values)
    missing = holes.sum(axis=0)
    summary = []
    for j, (name, count) in enumerate(zip(table.columns, missing, strict=True)):
        cells = table.values[:, j]
        distinct = np.unique(cells[~np.isnan(cells)])
        whole = bool((np.round(distinct) == distinct).all())
        summary.append(
            {
                "name": name,
                "rows": table.rows,
                "missing": int(count),
                "binary": name in BINARY,
                "levels": [float(v) for v in distinct] if whole and distinct.size <= 50 else [],
                "whole": whole,
                "negative": bool((distinct < 0).any()),
                "missing_with": [
                    int((holes[:, j] & holes[:, k]).sum()) for k in range(len(missing))
                ],
            }
        )
    return summary


def _wizard_form(central: TestClient, csrf: str, path: Path) -> dict[str, Any]:
    """What the browser sends for a valid SIMICE job over the demo columns (no site ticked: the
    wizard refuses that, so a test that creates the job adds one).

    ``columns_json`` is what the columns step puts in its hidden field (tested on its own).
    """
    parameters = central.get(
        "/jobs/new/parameters?algorithm=SIMICE", headers=htmx_headers(csrf)
    ).text
    defaults = _parameter_inputs(parameters)
    form: dict[str, Any] = {
        "csrf_token": csrf,
        "algorithm": "SIMICE",
        "columns_json": json.dumps(_summary(path)),
        "target": ["bmi", "smoker"],
        **{f"type:{c}": "logistic" if c in BINARY else "gaussian" for c in COLUMNS},
        **{
            name: str(field.get("value", ""))
            for name, field in defaults.items()
            if field["type"] != "checkbox" or field.has_attr("checked")  # as a browser sends
        },
        "name": "Wizard job",
        "description": "made in the wizard",
        "seed": "42",
    }
    form["param:imputations"] = "3"
    form["param:iteration_before_first_imputation"] = "2"
    form["param:chains"] = "parallel"  # the select's chosen option, as a browser sends it
    form["param:site_effect"] = "none"  # likewise
    return form


# ------------------------------------------------------------------ the steps


def test_new_job_page_lists_algorithms_and_sites(central: TestClient) -> None:
    anonymous = central.get("/jobs/new", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/sign-in")

    _, north = approved_site(central, "north")
    _admin(central)
    page = _soup(central.get("/jobs/new").text)
    radios = page.select("#step-algorithm input[type=radio][name=algorithm]")
    assert [r["value"] for r in radios] == [
        "SIMI",
        "SIMICE",
        "AVGMMI",
        "AVGMMICE",
        "CSLMI",
        "CSLMICE",
        "IMI",
        "IMICE",
    ]
    assert not any(r.has_attr("checked") for r in radios)
    labels = {str(r["value"]): r.find_parent("label") for r in radios}
    builtins = Registry.with_builtins()
    for name, label in labels.items():
        assert isinstance(label, Tag)
        text = label.get_text(" ", strip=True)
        assert builtins.get(name).description[:40] in text
        assert ", ".join(builtins.get(name).capabilities.target_types) in text
    simice = labels["SIMICE"]
    assert simice is not None and "several targets" in simice.get_text()
    # No algorithm yet: no parameters; the approved site is offered.
    assert "Choose an algorithm" in _one(page, "#step-parameters").get_text()
    sites = page.select("#step-sites input[name=participants]")
    assert [s["value"] for s in sites] == [north]
    assert _one(page, "input[name=csrf_token]")["value"]

    # A site user may not open the wizard.
    central.cookies.clear()
    browser_sign_in(central, "north", SITE_PASSWORD)
    assert central.get("/jobs/new").status_code == 403


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no storage
def test_parameters_fragment_from_the_schema(central: TestClient) -> None:
    csrf = _admin(central)
    response = central.get("/jobs/new/parameters?algorithm=SIMICE", headers=htmx_headers(csrf))
    assert response.status_code == 200
    assert response.text.lstrip().startswith('<fieldset class="step" id="step-parameters">')
    assert "<html" not in response.text and "<nav" not in response.text
    inputs = _parameter_inputs(response.text)
    assert {name: field.get("value") for name, field in inputs.items()} == {
        "param:imputations": "5",
        "param:iteration_before_first_imputation": "13",
        "param:iteration_between_imputations": "2",
        "param:ridge": "1e-05",
        "param:max_iter": "100",
        "param:min_rows": "",
        "param:secure_aggregation": "true",
        "param:donors": "5",
    }
    secure = inputs.pop("param:secure_aggregation")  # a boolean is a checkbox, off by default
    assert secure["type"] == "checkbox" and not secure.has_attr("checked")
    assert all(field["type"] == "number" for field in inputs.values())
    assert inputs["param:imputations"]["step"] == "1"
    assert inputs["param:imputations"]["min"] == "1"
    assert inputs["param:imputations"]["max"] == "1000"
    assert inputs["param:ridge"]["step"] == "any"
    assert not inputs["param:min_rows"].has_attr("required")  # optional: empty means default
    assert inputs["param:imputations"].has_attr("required")
    chains = _one(_soup(response.text), "select[name='param:chains']")  # a choice: a select
    assert [o["value"] for o in chains.select("option")] == ["parallel", "single"]
    assert _one(chains, "option[selected]")["value"] == "parallel"
    labels = {label.get_text(strip=True) for label in _soup(response.text).select("label")}
    assert {"Imputations (M)", "Cycles before the first imputation", "Ridge"} <= labels
    (site_effect,) = _soup(response.text).select("select[name='param:site_effect']")
    assert [o["value"] for o in site_effect.select("option")] == ["none", "intercept"]
    assert [o["value"] for o in site_effect.select("option[selected]")] == ["none"]

    simi = _parameter_inputs(
        central.get("/jobs/new/parameters?algorithm=SIMI", headers=htmx_headers(csrf)).text
    )
    assert set(simi) == {
        "param:imputations",
        "param:ridge",
        "param:max_iter",
        "param:min_rows",
        "param:secure_aggregation",
        "param:donors",
    }

    unknown = central.get("/jobs/new/parameters?algorithm=NOPE", headers=htmx_headers(csrf))
    assert unknown.status_code == 404
    assert "NOPE" in unknown.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no storage
def test_columns_fragment_keeps_names_and_counts_only(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    csrf = _admin(central)
    path = demo_files["central"]
    status, html = _columns_step(central, csrf, path)
    assert status == 200, html
    fragment = _soup(html)
    assert html.lstrip().startswith('<div id="step-columns">')
    assert "<html" not in html

    table = read_csv(path)
    missing = np.isnan(table.values).sum(axis=0)
    rows = fragment.select("#step-columns > table tbody tr")  # not the md.pattern table's
    assert len(rows) == len(COLUMNS)
    for row, name, count in zip(rows, COLUMNS, missing, strict=True):
        box = _one(row, "input[type=checkbox]")
        assert (box["name"], box["value"]) == ("target", name)
        assert not box.has_attr("checked")
        text = row.get_text(" ", strip=True)
        assert name in text
        assert f"{100 * count / table.rows:.1f}%" in text
        assert f"({count} of {table.rows})" in text
        select = _one(row, f"select[name='type:{name}']")
        role = _one(row, f"select[name='role:{name}']")
        assert [o["value"] for o in role.select("option[selected]")] == ["predictor"], name
        assert [o["value"] for o in select.select("option")] == list(METHODS)
        chosen = [o["value"] for o in select.select("option[selected]")]
        assert chosen == ["logistic" if name in BINARY else "pmm"], name  # demo: continuous
    assert missing[COLUMNS.index("bmi")] > 0 and missing[COLUMNS.index("smoker")] > 0

    summary = json.loads(str(_one(fragment, "input[type=hidden][name=columns_json]")["value"]))
    expected = _summary(path)
    assert [{k: c[k] for k in e} for c, e in zip(summary, expected, strict=True)] == expected
    assert all(c["numeric"] and not c["text_levels"] for c in summary)

    # No value of the file reaches the page.
    lines = path.read_text().splitlines()[1:]
    shown = {f"{100 * c / table.rows:.1f}" for c in missing} | {str(int(c)) for c in missing}
    values = [line.split(",")[COLUMNS.index("bmi")] for line in lines]
    decimals = [v for v in values if "." in v and not any(v in s for s in shown)]
    assert decimals, "the demo bmi has decimals"
    for value in decimals[:20]:
        assert value not in html, value
    assert lines[0] not in html and lines[1] not in html

    # Only the types the algorithm supports are offered.
    upload_algorithm(central, meandraw_files())
    status, html = _columns_step(central, csrf, path, algorithm="MEANDRAW")
    assert status == 200, html
    for select in _soup(html).select("select[name^='type:']"):
        assert [o["value"] for o in select.select("option")] == ["gaussian"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no storage
def test_columns_step_errors(central: TestClient, tmp_path: Path) -> None:
    csrf = _admin(central)
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"age,sex,bmi\n60,1\n")
    status, html = _columns_step(central, csrf, broken)
    assert status == 422
    message = _one(_soup(html), "#step-columns p.error").get_text()
    assert "broken.csv" in message and "line 2" in message
    assert _soup(html).select("input[name=columns_json]") == []

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    status, html = _columns_step(central, csrf, empty)
    assert status == 422 and "empty.csv" in _one(_soup(html), "p.error").get_text()

    no_file = central.post(
        "/jobs/new/columns", data={"algorithm": "SIMICE"}, headers=htmx_headers(csrf)
    )
    assert no_file.status_code == 422
    assert "choose a CSV file" in no_file.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no storage
def test_uploads_without_the_csrf_token_are_refused(central: TestClient) -> None:
    """Refused, and the uploaded file is closed (an unclosed one fails under -W error)."""
    _admin(central)
    for path in ("/jobs/new/columns", "/jobs/1/data"):
        refused = central.post(
            path,
            data={"algorithm": "SIMICE"},
            files={"header_file": ("a.csv", b"a\n1\n", "text/csv")},
            headers={"HX-Request": "true"},
        )
        assert refused.status_code == 403, path


# ------------------------------------------------------------------ creating


def test_create_a_job_through_the_wizard(central: TestClient, demo_files: dict[str, Path]) -> None:
    _, north = approved_site(central, "north")
    csrf = _admin(central)
    form = {**_wizard_form(central, csrf, demo_files["central"]), "participants": [north]}
    response = central.post("/jobs", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text[:2000]
    location = response.headers["location"]
    job_id = int(location.removeprefix("/jobs/"))

    job = central.get(f"/api/jobs/{job_id}", headers=admin_auth(central)).json()
    assert job["name"] == "Wizard job" and job["description"] == "made in the wizard"
    assert job["columns"] == list(COLUMNS)
    assert job["targets"] == [
        {"index": 3, "name": "bmi", "type": "gaussian"},
        {"index": 6, "name": "smoker", "type": "logistic"},
    ]
    assert job["parameters"] == {
        "imputations": 3,
        "iteration_before_first_imputation": 2,
        "iteration_between_imputations": 2,
        "chains": "parallel",
        "ridge": 1e-5,
        "max_iter": 100,
        "min_rows": 18,
        "donors": 5,
        "site_effect": "none",
    }
    assert job["seed"] == 42
    assert [p["site_id"] for p in job["participants"]] == [north]

    # The job page: algorithm, digest, targets by name, parameters and the upload form.
    page = _soup(central.get(location).text)
    assert _one(page, "h1").get_text(strip=True) == "Wizard job"
    facts = _one(page, "dl.facts").get_text(" ", strip=True)
    assert f"SIMICE {Registry.with_builtins().get('SIMICE').version}" in facts
    assert Registry.with_builtins().get("SIMICE").digest in facts
    assert "bmi (column 3, continuous)" in facts and "smoker (column 6, binary)" in facts
    assert "imputations=3" in facts and "ridge=1e-05" in facts and "min_rows=18" in facts
    assert "42" in facts
    upload = _one(page, f"form[action='/jobs/{job_id}/data']")
    assert upload["enctype"] == "multipart/form-data"
    assert _one(upload, "input[type=file]")["name"] == "file"
    assert _one(upload, "input[name=csrf_token]")["value"] == csrf
    assert north in _one(page, "table.list").get_text()
    assert "Wizard job" in central.get("/jobs").text

    # The site in the job sees its page, without central's controls; other jobs stay hidden.
    other = central.post(
        "/api/jobs",
        json={
            "name": "other",
            "algorithm": "IMI",
            "columns": list(COLUMNS),
            "targets": [{"column": "bmi", "type": "gaussian"}],
            "seed": 1,
        },
        headers=admin_auth(central),
    )
    assert other.status_code == 201, other.text
    central.cookies.clear()
    browser_sign_in(central, "north", SITE_PASSWORD)
    seen = central.get(location)
    assert seen.status_code == 200
    assert _soup(seen.text).select("form[action$='/data'], form[action$='/cancel']") == []
    assert central.get(f"/jobs/{other.json()['id']}").status_code == 404
    listed = _soup(central.get("/jobs").text).select("table.list tbody td:first-child a")
    assert [a.get_text(strip=True) for a in listed] == ["Wizard job"]


def _checked_targets(page: BeautifulSoup) -> set[str]:
    return {str(b["value"]) for b in page.select("input[name=target][checked]")}


def _error_next_to(page: BeautifulSoup, field: str) -> str:
    """The error message inside the container of the field (by the field's element id)."""
    containers = {
        "algorithm": "#step-algorithm",
        "targets": "#step-columns",
        "name": "div.field:has(> #f-name)",
        "seed": "div.field:has(> #f-seed)",
    }
    selector = containers.get(field) or f"div.field:has(> #p-{field.removeprefix('param_')})"
    return _one(_one(page, selector), "p.error").get_text(strip=True)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_wizard_errors_keep_what_was_typed(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    csrf = _admin(central)
    good = _wizard_form(central, csrf, demo_files["central"])
    cases: list[tuple[str, dict[str, Any], str, str]] = [
        # (case, changes (None removes), field, words of the message)
        ("no algorithm", {"algorithm": None}, "algorithm", "choose an algorithm"),
        ("no target ticked", {"target": None}, "targets", "no target"),
        ("SIMI with two targets", {"algorithm": "SIMI"}, "targets", "one target"),
        ("imputations not a number", {"param:imputations": "three"}, "param_imputations", "whole"),
        ("ridge not a number", {"param:ridge": "lots"}, "param_ridge", "must be a number"),
        ("no imputation", {"param:imputations": "0"}, "param_imputations", "minimum"),
        ("seed not a number", {"seed": "12a"}, "seed", "seed"),
        ("seed too large", {"seed": str(2**32)}, "seed", "4294967295"),
        ("no name", {"name": "  "}, "name", "name"),
        (
            "secure aggregation with one site",
            {"param:secure_aggregation": "true"},
            "param_secure_aggregation",
            "at least two remote sites",
        ),
    ]
    unmarked: list[str] = []
    for case, changes, field, words in cases:
        form = {k: v for k, v in {**good, **changes}.items() if v is not None}
        response = central.post("/jobs", data=form, follow_redirects=False)
        assert 400 <= response.status_code < 500, (case, response.status_code)
        page = _soup(response.text)
        assert _one(page, "h1").get_text(strip=True) == "New job", case
        assert words in _error_next_to(page, field), case

        # What was typed is kept.
        assert _one(page, "#f-name")["value"] == form["name"], case
        assert _one(page, "#f-description").get_text() == form["description"], case
        assert _one(page, "#f-seed")["value"] == form["seed"], case
        assert _checked_targets(page) == set(form.get("target", [])), case
        kept = json.loads(str(_one(page, "input[name=columns_json]")["value"]))
        typed = json.loads(good["columns_json"])
        assert [{k: c[k] for k in t} for c, t in zip(kept, typed, strict=True)] == typed, case
        smoker = _one(page, "select[name='type:smoker'] option[selected]")
        assert smoker["value"] == "logistic", case
        radios = page.select("input[name=algorithm][checked]")
        assert [r["value"] for r in radios] == ([form["algorithm"]] if "algorithm" in form else [])
        if form.get("algorithm") == "SIMICE":
            kept = {
                n: f.get("value")
                for n, f in _parameter_inputs(response.text).items()
                if f["type"] != "checkbox" or f.has_attr("checked")
            } | {  # a choice is a select: its chosen option
                str(select["name"]): _one(select, "option[selected]")["value"]
                for select in page.select("select[name^='param:']")
            }
            assert kept == {k: v for k, v in form.items() if k.startswith("param:")}, case
            if field.startswith("param_"):
                invalid = _one(page, f"#p-{field.removeprefix('param_')}")
                if invalid.get("aria-invalid") != "true":
                    unmarked.append(f"{case}: {invalid}")
    assert central.get("/api/jobs", headers=admin_auth(central)).json() == []
    # The field in error is marked for assistive technology (after the loop, so that every
    # case above is checked first).
    assert not unmarked, "\n".join(unmarked)


# ------------------------------------------------------------------ the job page


def _api_job(central: TestClient, **overrides: Any) -> int:
    body = {
        "name": "page job",
        "algorithm": chained_algorithm(overrides),
        "columns": list(COLUMNS),
        "targets": [
            {"column": "bmi", "type": "gaussian"},
            {"column": "smoker", "type": "logistic"},
        ],
        "imputations": 2,
        "seed": 3,
        **overrides,
    }
    response = central.post("/api/jobs", json=body, headers=admin_auth(central))
    assert response.status_code == 201, response.text
    job_id: int = response.json()["id"]
    return job_id


def test_central_data_through_the_job_page(
    central: TestClient, demo_files: dict[str, Path]
) -> None:
    _, north = approved_site(central, "north")
    job_id = _api_job(central, participants=[north])
    csrf = _admin(central)

    wrong = central.post(
        f"/jobs/{job_id}/data",
        files={"file": ("wrong.csv", b"age,sex,bmi\n60,1,25.0\n", "text/csv")},
        headers=htmx_headers(csrf),
    )
    assert wrong.status_code == 422
    block = _soup(wrong.text)
    assert wrong.text.lstrip().startswith(f'<section id="job-{job_id}-status"')
    alert = _one(block, ".alert-error").get_text()
    assert "wrong.csv" in alert and "missing 'sbp', 'cholesterol', 'smoker'" in alert
    assert "created" in _one(block, "h2").get_text()

    right = central.post(
        f"/jobs/{job_id}/data",
        files={"file": ("central.csv", demo_files["central"].read_bytes(), "text/csv")},
        headers=htmx_headers(csrf),
    )
    assert right.status_code == 200
    text = _soup(right.text).get_text(" ", strip=True)
    assert "waiting" in text and f"Waiting for: {north}" in text

    # The plain form (no HTMX) redirects back to the page.
    other = _api_job(central)
    plain = central.post(
        f"/jobs/{other}/data",
        data={"csrf_token": csrf},
        files={"file": ("central.csv", b"age\n1\n", "text/csv")},
        follow_redirects=False,
    )
    assert plain.status_code == 422
    assert "missing 'sex'" in _one(_soup(plain.text), ".alert-error").get_text()
    cancel = central.post(
        f"/jobs/{other}/cancel", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert cancel.status_code == 303 and cancel.headers["location"] == f"/jobs/{other}"
    assert "cancelled" in _one(_soup(central.get(f"/jobs/{other}").text), "h2").get_text()


def test_job_events_stream(central: TestClient) -> None:
    job_id = _api_job(central)
    _admin(central)
    broker = portal_state(central).broker
    events: list[tuple[str, str]] = []
    watchdog = threading.Timer(5.0, broker.publish, args=(job_id, "state"))
    with central.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        deadline = time.monotonic() + 5
        while not broker.subscribers(job_id) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert broker.subscribers(job_id), "the page subscribed to the job's events"
        watchdog.start()  # should nothing arrive, this wakes the stream (and the test fails)
        try:
            broker.publish(job_id, JobEvent(kind="log", message="hello from a test", site="north"))
            cancelled = central.post(f"/api/jobs/{job_id}/cancel", headers=admin_auth(central))
            assert cancelled.json()["state"] == "cancelled"
            kind, data = "", ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    data += line.removeprefix("data:").strip()
                elif not line and kind:
                    events.append((kind, data))
                    kind, data = "", ""
                    if len(events) == 5:
                        break
        finally:
            watchdog.cancel()
    # First the blocks as they were when the stream opened, then each change.
    assert [kind for kind, _ in events] == ["status", "progress", "log", "log", "status"]
    assert "created" in events[0][1] and f'id="job-{job_id}-status"' in events[0][1]
    assert "hello from a test" in events[3][1] and "north" in events[3][1]
    assert "cancelled" in events[4][1] and f'id="job-{job_id}-status"' in events[4][1]

    # Only those who may see the job get its events.
    central.cookies.clear()
    approved_site(central, "south")
    browser_sign_in(central, "south", SITE_PASSWORD)
    assert central.get(f"/jobs/{job_id}/events").status_code == 404


def test_the_wizard_proposes_roles_and_creates_a_job_with_them(
    central: TestClient, tmp_path: Path
) -> None:
    """Text with few levels: factor; an ID: carried; numbers: predictor. The user's changes
    (a role, levels, a predictor list) go into the job."""
    csrf = _admin(central)
    _, north = approved_site(central, "north")
    path = tmp_path / "ward.csv"
    lines = ["id,ward,age,score"] + [
        f"W{i:03d},{('north', 'south', 'east')[i % 3]},{20 + i % 30},{'' if i % 4 == 0 else i % 7}"
        for i in range(40)
    ]
    path.write_text("\n".join(lines) + "\n")

    status, html = _columns_step(central, csrf, path)

    assert status == 200, html
    fragment = _soup(html)
    proposed = {
        name: [o["value"] for o in fragment.select(f"select[name='role:{name}'] option[selected]")]
        for name in ("id", "ward", "age", "score")
    }
    assert proposed == {
        "id": ["carried"],
        "ward": ["factor"],
        "age": ["predictor"],
        "score": ["predictor"],
    }
    assert _one(fragment, "input[name='levels:ward']")["value"] == "east,north,south"
    assert "W001" not in html
    columns_json = str(_one(fragment, "input[type=hidden][name=columns_json]")["value"])
    parameters = central.get("/jobs/new/parameters?algorithm=SIMI", headers=htmx_headers(csrf))
    defaults = _parameter_inputs(parameters.text)
    form = {
        "csrf_token": csrf,
        "algorithm": "SIMI",
        "columns_json": columns_json,
        "target": ["score"],
        "type:score": "gaussian",
        "role:id": "carried",
        "role:ward": "factor",
        "levels:ward": "north,south,east",
        "role:age": "predictor",
        "predictors:score": "ward",
        **{
            name: str(field.get("value", ""))
            for name, field in defaults.items()
            if field["type"] != "checkbox" or field.has_attr("checked")
        },
        "participants": [north],
        "name": "Roles job",
        "description": "",
        "seed": "1",
    }

    response = central.post("/jobs", data=form, follow_redirects=False)

    assert response.status_code == 303, response.text[:2000]
    job_id = int(response.headers["location"].removeprefix("/jobs/"))
    job = central.get(f"/api/jobs/{job_id}", headers=admin_auth(central)).json()
    assert job["roles"] == {
        "factors": {"ward": ["north", "south", "east"]},
        "carried": ["id"],
        "predictors": {"score": ["ward"]},
    }
    assert job["targets"] == [{"index": 3, "name": "score", "type": "gaussian"}]

    # A carried column in a predictor list is refused next to the columns, naming it.
    response = central.post(
        "/jobs", data={**form, "predictors:score": "ward,id"}, follow_redirects=False
    )
    assert response.status_code == 422
    message = _one(_soup(response.text), "#e-roles").get_text(strip=True)
    assert "column 'id' is carried" in message
