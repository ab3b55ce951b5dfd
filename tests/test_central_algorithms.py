"""The algorithm registry at central: built-ins, uploads with their checks, versions, retiring."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup, Tag
from fastapi.testclient import TestClient
from sqlalchemy import select

from federation.demo import COLUMNS
from federation.registry import Registry, package_digest
from portal_central.app import create_app
from portal_central.methods import METHODS
from portal_central.models import AlgorithmVersion
from portal_central.settings import CentralSettings
from tests.central_fixtures import (
    ADMIN,
    EVERY_DATABASE,
    SITE_PASSWORD,
    admin_auth,
    approved_site,
    bearer,
    browser_sign_in,
    create_admin,
    meandraw_files,
    portal_state,
    token,
    upload_algorithm,
    upload_parts,
)
from tests.prepared_central import central_with_meandraw

CENTRAL_FILE, REMOTE_FILE, PARAMS_FILE = "MEANDRAWCentral.py", "MEANDRAWRemote.py", "params.json"


def _job(**overrides: Any) -> dict[str, Any]:
    """A MEANDRAW job over the demo columns (no sites)."""
    return {
        "name": "bmi baseline",
        "algorithm": "MEANDRAW",
        "columns": list(COLUMNS),
        "targets": [{"column": "bmi", "type": "gaussian"}],
        "imputations": 2,
        "seed": 1,
        **overrides,
    }


def _versions(client: TestClient, name: str) -> list[dict[str, Any]]:
    listed = client.get("/api/algorithms", headers=admin_auth(client))
    assert listed.status_code == 200, listed.text
    return [v for v in listed.json() if v["name"] == name]


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


@pytest.fixture
def central_meandraw(tmp_path: Path) -> Iterator[TestClient]:
    """Central as the ``central`` fixture's (SQLite), with MEANDRAW 1.0.0 uploaded already:
    the upload, made once per run, is copied with its database (tests/prepared_central.py)."""
    with central_with_meandraw(tmp_path) as client:
        yield client


def test_builtins_are_listed_after_start_up(central: TestClient) -> None:
    builtins = Registry.with_builtins()
    listed = {v["name"]: v for v in _versions(central, "SIMI") + _versions(central, "SIMICE")}
    assert set(listed) == {"SIMI", "SIMICE"}
    for name, version in listed.items():
        assert version["builtin"] is True
        assert version["retired"] is False
        assert version["uploaded_by"] is None
        assert version["digest"] == builtins.get(name).digest
        assert version["target_types"] == list(builtins.get(name).capabilities.target_types)
        assert "imputations" in version["parameters"]["properties"]
    assert listed["SIMI"]["multiple_targets"] is False
    assert listed["SIMICE"]["multiple_targets"] is True

    assert central.get("/api/algorithms").status_code == 401  # anonymous: nothing

    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = central.get("/algorithms")
    assert page.status_code == 200
    links = {a["href"] for a in _soup(page.text).select("table.list a[href]")}
    assert {"/algorithms/SIMI", "/algorithms/SIMICE"} <= links
    detail = _soup(central.get("/algorithms/SIMICE").text)
    assert detail.h1 is not None and "SIMICE" in detail.h1.get_text()
    assert builtins.get("SIMICE").digest in detail.get_text()


@EVERY_DATABASE
def test_upload_view_versions_and_default(central: TestClient) -> None:
    files = meandraw_files()
    uploaded = upload_algorithm(central, files)
    assert uploaded["name"] == "MEANDRAW"
    assert uploaded["version"] == "1.0.0"
    assert uploaded["digest"] == package_digest(files)
    assert uploaded["builtin"] is False
    assert uploaded["uploaded_by"] == ADMIN["username"]
    assert uploaded["multiple_targets"] is False
    assert uploaded["target_types"] == ["gaussian"]

    # The code is viewable, and sites fetch the remote half by its name.
    remote = central.get(
        f"/api/algorithms/MEANDRAW/1.0.0/files/{REMOTE_FILE}", headers=admin_auth(central)
    )
    assert remote.status_code == 200
    assert remote.text == files[REMOTE_FILE].decode()
    missing = central.get(
        "/api/algorithms/MEANDRAW/1.0.0/files/other.py", headers=admin_auth(central)
    )
    assert missing.status_code == 404
    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = _soup(central.get("/algorithms/MEANDRAW").text)
    shown = {
        summary.get_text(strip=True): pre.get_text()
        for summary, pre in zip(page.select("details summary"), page.select("pre"), strict=True)
    }
    assert shown == {name: content.decode() for name, content in files.items()}
    assert package_digest(files) in page.get_text()

    # The same version again is refused, naming it.
    again = central.post("/api/algorithms", files=upload_parts(files), headers=admin_auth(central))
    assert again.status_code == 409
    assert "1.0.0" in again.json()["detail"]
    assert again.json()["field"] == "params"

    # A new version is kept beside the old one; the newest is the default.
    newer_files = meandraw_files("1.1.0")
    newer = upload_algorithm(central, newer_files)
    assert newer["version"] == "1.1.0"
    assert newer["digest"] == package_digest(newer_files) != uploaded["digest"]
    assert [v["version"] for v in _versions(central, "MEANDRAW")] == ["1.0.0", "1.1.0"]
    old_params = central.get(
        f"/api/algorithms/MEANDRAW/1.0.0/files/{PARAMS_FILE}", headers=admin_auth(central)
    )
    assert json.loads(old_params.text)["version"] == "1.0.0"

    page = _soup(central.get("/algorithms/MEANDRAW").text)
    assert page.h1 is not None and "1.1.0" in page.h1.get_text()
    rows = [r.get_text(" ", strip=True) for r in page.select("table.list tbody tr")]
    assert len(rows) == 2 and "1.0.0" in rows[0] and "1.1.0" in rows[1]
    old_page = _soup(central.get("/algorithms/MEANDRAW?version=1.0.0").text)
    assert old_page.h1 is not None and "1.0.0" in old_page.h1.get_text()

    _, north = approved_site(central)  # MEANDRAW pools the sites: a job needs one
    job = central.post("/api/jobs", json=_job(participants=[north]), headers=admin_auth(central))
    assert job.status_code == 201, job.text
    assert (job.json()["version"], job.json()["digest"]) == ("1.1.0", newer["digest"])
    pinned = central.post(
        "/api/jobs", json=_job(version="1.0.0", participants=[north]), headers=admin_auth(central)
    )
    assert pinned.status_code == 201, pinned.text
    assert (pinned.json()["version"], pinned.json()["digest"]) == ("1.0.0", uploaded["digest"])


def _retire_form(page: BeautifulSoup, version: str) -> Tag:
    for row in page.select("table.list tbody tr"):
        link = row.find("a")
        if link is not None and link.get_text(strip=True) == version:
            form = row.find("form")
            assert isinstance(form, Tag)
            return form
    raise AssertionError(f"no row for version {version}")


def test_retire_a_version_through_the_page(central_meandraw: TestClient) -> None:
    central = central_meandraw  # with MEANDRAW 1.0.0
    upload_algorithm(central, meandraw_files("1.1.0"))
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    form = _retire_form(_soup(central.get("/algorithms/MEANDRAW").text), "1.1.0")
    action = str(form["action"])
    assert action.startswith("/algorithms/MEANDRAW/versions/") and action.endswith("/retire")

    # Without the CSRF token the form is refused.
    refused = central.post(action, data={}, follow_redirects=False)
    assert refused.status_code == 403
    assert not [v for v in _versions(central, "MEANDRAW") if v["retired"]]

    response = central.post(action, data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/algorithms/MEANDRAW?version=1.1.0"
    retired = {v["version"]: v["retired"] for v in _versions(central, "MEANDRAW")}
    assert retired == {"1.0.0": False, "1.1.0": True}
    row = _retire_form(_soup(central.get("/algorithms/MEANDRAW").text), "1.1.0").find_parent("tr")
    assert row is not None and "retired" in row.get_text()

    headers = admin_auth(central)
    _, north = approved_site(central)  # MEANDRAW pools the sites: a job needs one
    refused_job = central.post("/api/jobs", json=_job(version="1.1.0"), headers=headers)
    assert refused_job.status_code == 409
    assert refused_job.json()["field"] == "version"
    assert "retired" in refused_job.json()["detail"]
    usable = central.post(
        "/api/jobs", json=_job(version="1.0.0", participants=[north]), headers=headers
    )
    assert usable.status_code == 201, usable.text
    default = central.post("/api/jobs", json=_job(participants=[north]), headers=headers)
    assert default.status_code == 201, default.text
    assert default.json()["version"] == "1.0.0"  # the newest in service

    # The wizard offers only the version in service.
    wizard = _soup(central.get("/jobs/new").text)
    offered = [
        label.get_text(" ", strip=True)
        for label in wizard.select("label.choice")
        if label.find("input", attrs={"value": "MEANDRAW"})
    ]
    assert len(offered) == 1 and "1.0.0" in offered[0]

    # With every version retired the algorithm cannot be used; putting one back restores it.
    page = _soup(central.get("/algorithms/MEANDRAW").text)
    last = str(_retire_form(page, "1.0.0")["action"])
    assert central.post(last, data={"csrf_token": csrf}).status_code == 200
    none_left = central.post("/api/jobs", json=_job(), headers=headers)
    assert none_left.status_code == 409 and none_left.json()["field"] == "algorithm"
    restore = str(_retire_form(_soup(central.get("/algorithms/MEANDRAW").text), "1.1.0")["action"])
    assert restore.endswith("/restore")
    assert central.post(restore, data={"csrf_token": csrf}).status_code == 200
    back = central.post("/api/jobs", json=_job(participants=[north]), headers=headers)
    assert back.status_code == 201 and back.json()["version"] == "1.1.0"


def test_methods_are_spelled_out_with_when_to_use_them_where_they_are_picked(
    central_meandraw: TestClient,
) -> None:
    central = central_meandraw  # with MEANDRAW, an upload
    browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    listing = _soup(central.get("/algorithms").text)
    wizard = _soup(central.get("/jobs/new").text)
    page = _soup(central.get("/algorithms/AVGMMI").text)

    for name, method in METHODS.items():
        link = listing.find("a", string=name)
        assert link is not None, name
        row = link.find_parent("tr")
        assert row is not None
        assert method.title in row.get_text(" ", strip=True), name
        assert method.when in row.get_text(" ", strip=True), name
        choice = wizard.find("input", attrs={"name": "algorithm", "value": name})
        assert choice is not None, name
        label = choice.find_parent("label")
        assert label is not None
        assert method.title in label.get_text(" ", strip=True), name
        assert method.when in label.get_text(" ", strip=True), name
    assert "Averaged-fit imputation (average mixture, AVGM)" in page.get_text()
    (meandraw,) = _versions(central, "MEANDRAW")
    assert meandraw["name"] not in METHODS, "an upload shows its own description only"


def test_a_built_in_cannot_be_retired(central: TestClient) -> None:
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    page = _soup(central.get("/algorithms/SIMI").text)
    assert not page.select("form[action$='/retire']"), "no Retire button for a built-in"
    assert "built in" in page.get_text()
    simi = next(v for v in _versions(central, "SIMI"))
    with portal_state(central).database.session() as session:
        version_id = session.scalar(
            select(AlgorithmVersion.id).where(
                AlgorithmVersion.name == "SIMI", AlgorithmVersion.version == simi["version"]
            )
        )

    refused = central.post(
        f"/algorithms/SIMI/versions/{version_id}/retire", data={"csrf_token": csrf}
    )

    assert refused.status_code == 403
    assert f"SIMI {simi['version']} is built in" in refused.text
    assert "cannot be retired" in refused.text
    assert not any(v["retired"] for v in _versions(central, "SIMI"))


def _syntax_error(files: dict[str, bytes]) -> dict[str, bytes]:
    return {**files, CENTRAL_FILE: files[CENTRAL_FILE] + b"\ndef broken(:\n    pass\n"}


def _edit(files: dict[str, bytes], name: str, old: bytes, new: bytes) -> dict[str, bytes]:
    assert old in files[name]
    return {**files, name: files[name].replace(old, new)}


def _params(files: dict[str, bytes], **changes: Any) -> dict[str, bytes]:
    meta = json.loads(files[PARAMS_FILE])
    meta.update(changes)
    return {**files, PARAMS_FILE: json.dumps(meta).encode()}


def _renamed(files: dict[str, bytes], old: str, new: str) -> dict[str, bytes]:
    return {new if name == old else name: content for name, content in files.items()}


def _upload_error_cases() -> list[tuple[str, dict[str, bytes], str | None, list[str]]]:
    """(case, files in the order central/remote/params, field, words the message must hold)."""
    good = meandraw_files()
    schema = json.loads(good[PARAMS_FILE])["parameters"]
    without_m = {**schema, "properties": {"min_rows": schema["properties"]["min_rows"]}}
    return [
        (
            "central file misnamed",
            _renamed(good, CENTRAL_FILE, "MEANDRAW_central.py"),
            "central",
            ["<Name>Central.py"],
        ),
        (
            "remote file of another name",
            _renamed(good, REMOTE_FILE, "OTHERRemote.py"),
            "remote",
            [REMOTE_FILE, "OTHERRemote.py"],
        ),
        (
            "params file misnamed",
            _renamed(good, PARAMS_FILE, "parameters.json"),
            "params",
            [PARAMS_FILE, "parameters.json"],
        ),
        ("syntax error in the central file", _syntax_error(good), "central", [CENTRAL_FILE]),
        (
            "central file without run",
            _edit(good, CENTRAL_FILE, b"async def run(", b"async def start("),
            "central",
            [CENTRAL_FILE, "run"],
        ),
        (
            "central file failing to import",
            _edit(good, CENTRAL_FILE, b"import numpy as np", b"import numpy_missing as np"),
            "central",
            [CENTRAL_FILE, "numpy_missing"],
        ),
        (
            "remote file without prepare",
            _edit(good, REMOTE_FILE, b"def prepare(", b"def setup("),
            "remote",
            [REMOTE_FILE, "prepare"],
        ),
        (
            "remote file without HANDLERS",
            _edit(good, REMOTE_FILE, b'HANDLERS = {"moments": moments}', b""),
            "remote",
            [REMOTE_FILE, "HANDLERS"],
        ),
        (
            "params.json not JSON",
            {**good, PARAMS_FILE: good[PARAMS_FILE].replace(b"{", b"", 1)},
            "params",
            [PARAMS_FILE, "JSON"],
        ),
        (
            "params.json naming another algorithm",
            _params(good, name="OTHER"),
            "params",
            [PARAMS_FILE, "OTHER"],
        ),
        (
            "params.json without capabilities",
            {
                **good,
                PARAMS_FILE: json.dumps(
                    {k: v for k, v in json.loads(good[PARAMS_FILE]).items() if k != "capabilities"}
                ).encode(),
            },
            "params",
            [PARAMS_FILE, "capabilities"],
        ),
        (
            "an unknown target type",
            _params(good, capabilities={"targets": "single", "target_types": ["negbin"]}),
            "params",
            [PARAMS_FILE, "target_types"],
        ),
        (
            "parameters not a JSON Schema",
            _params(good, parameters={**schema, "type": "nonsense"}),
            "params",
            [PARAMS_FILE, "JSON Schema"],
        ),
        (
            "schema without imputations",
            _params(good, parameters=without_m),
            "params",
            [PARAMS_FILE, "imputations"],
        ),
        (
            "pair crashing in its trial run",
            _edit(
                good,
                REMOTE_FILE,
                b'return {"n": n, "sum": total, "ss": ss}',
                b'return {"n": n, "sum": total, "ss": ss / 0}',
            ),
            None,
            ["trial run", "ZeroDivisionError"],
        ),
    ]


def test_every_upload_error_names_its_file(central: TestClient) -> None:
    headers = admin_auth(central)
    for case, files, field, words in _upload_error_cases():
        response = central.post("/api/algorithms", files=upload_parts(files), headers=headers)
        # File names are checked before the contents (400 or 422); contents are unprocessable.
        misnamed = set(files) != {CENTRAL_FILE, REMOTE_FILE, PARAMS_FILE}
        allowed = (400, 422) if misnamed else (422,)
        assert response.status_code in allowed, (case, response.status_code, response.text)
        body = response.json()
        assert body["field"] == field, (case, body)
        for word in words:
            assert word in body["detail"], (case, word, body["detail"])
    assert _versions(central, "MEANDRAW") == []  # nothing was stored


def test_a_site_user_cannot_upload(central: TestClient) -> None:
    approved_site(central, "north")
    site = bearer(token(central, "north", SITE_PASSWORD))
    refused = central.post("/api/algorithms", files=upload_parts(meandraw_files()), headers=site)
    assert refused.status_code == 403
    assert "admin" in refused.json()["detail"]
    anonymous = central.post("/api/algorithms", files=upload_parts(meandraw_files()))
    assert anonymous.status_code == 401
    # A site may read the registry and the remote halves it runs.
    assert central.get("/api/algorithms", headers=site).status_code == 200
    simi = Registry.with_builtins().get("SIMI").version
    remote = central.get(f"/api/algorithms/SIMI/{simi}/files/SIMIRemote.py", headers=site)
    assert remote.status_code == 200 and "HANDLERS" in remote.text
    assert _versions(central, "MEANDRAW") == []

    # Nor through the page form.
    csrf = browser_sign_in(central, "north", SITE_PASSWORD)
    page = central.post(
        "/algorithms",
        data={"csrf_token": csrf},
        files=upload_parts(meandraw_files()),
        follow_redirects=False,
    )
    assert page.status_code == 403
    assert _versions(central, "MEANDRAW") == []


def test_page_upload_errors_rerender_the_list(central: TestClient) -> None:
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])

    broken = central.post(
        "/algorithms",
        data={"csrf_token": csrf},
        files=upload_parts(_syntax_error(meandraw_files())),
        follow_redirects=False,
    )
    assert broken.status_code == 422
    page = _soup(broken.text)
    assert page.h1 is not None and page.h1.get_text(strip=True) == "Algorithms"
    alert = page.select_one(".alert-error")
    assert alert is not None and CENTRAL_FILE in alert.get_text()
    central_input = page.select_one("input#f-central")
    assert central_input is not None and central_input.get("aria-invalid") == "true"
    assert page.select_one("input#f-remote[aria-invalid]") is None

    accepted = central.post(
        "/algorithms",
        data={"csrf_token": csrf},
        files=upload_parts(meandraw_files()),
        follow_redirects=False,
    )
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/algorithms/MEANDRAW?version=1.0.0"

    again = central.post(
        "/algorithms",
        data={"csrf_token": csrf},
        files=upload_parts(meandraw_files()),
        follow_redirects=False,
    )
    assert again.status_code == 409
    alert = _soup(again.text).select_one(".alert-error")
    assert alert is not None and "1.0.0" in alert.get_text() and "exists" in alert.get_text()

    no_csrf = central.post(
        "/algorithms", files=upload_parts(meandraw_files("2.0.0")), follow_redirects=False
    )
    assert no_csrf.status_code == 403
    assert [v["version"] for v in _versions(central, "MEANDRAW")] == ["1.0.0"]


def test_uploaded_code_runs_when_it_is_checked_and_used_never_at_start_up(
    central_settings: CentralSettings, tmp_path: Path
) -> None:
    """A central half that notes each time it is loaded: once for the upload's trial run, then
    only when a job runs it; restarting central loads nothing."""
    marker = tmp_path / "loaded"
    files = meandraw_files()
    files[CENTRAL_FILE] += (
        f"\n\nwith open({str(marker)!r}, 'a') as _marker:\n    _marker.write('loaded\\n')\n"
    ).encode()
    with TestClient(create_app(central_settings)) as client:
        create_admin(client)
        upload_algorithm(client, files)
    assert marker.read_text() == "loaded\n"

    with TestClient(create_app(central_settings)) as client:  # central starts again
        assert any(v["name"] == "MEANDRAW" for v in _versions(client, "MEANDRAW"))

    assert marker.read_text() == "loaded\n"


def test_a_job_too_wide_for_one_message_is_refused_when_it_is_created(
    central: TestClient,
) -> None:
    columns = [f"c{i}" for i in range(3000)]
    job = {
        "name": "wide",
        "algorithm": "SIMI",
        "columns": columns,
        "targets": [{"column": "c0", "type": "gaussian"}],
        "seed": 1,
    }

    refused = central.post("/api/jobs", json=job, headers=admin_auth(central))

    assert refused.status_code == 422, refused.text
    assert "SIMI on 3000 columns makes replies of 69 MiB" in refused.text
    assert "more than the 64 MiB a message between central and a site may carry" in refused.text


def test_a_version_number_taken_is_refused_before_its_trial_run(
    central_meandraw: TestClient,
) -> None:
    """Running new code to refuse its number anyway would cost a trial (sandbox processes) and
    report the wrong fault: here the new files would fail their trial, and the answer is about
    the number."""
    files = meandraw_files()
    remote = "MEANDRAWRemote.py"
    broken = (
        b"\n\ndef broken(site):\n    raise RuntimeError('x')\n\n\nHANDLERS = {'moments': broken}\n"
    )
    files[remote] = files[remote] + broken
    refused = central_meandraw.post(
        "/api/algorithms", files=upload_parts(files), headers=admin_auth(central_meandraw)
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["field"] == "params"
    assert "MEANDRAW version 1.0.0 exists already;" in refused.json()["detail"]
    assert "trial run" not in refused.json()["detail"]
    assert [v["version"] for v in _versions(central_meandraw, "MEANDRAW")] == ["1.0.0"]
