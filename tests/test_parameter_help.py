"""Parameter help in words a clinician understands, with the maths one click away.

Each parameter of a built-in declares a ``title``, a ``description`` in plain words (shown under
its field in the job wizard) and its ``maths`` (shown in a closed <details> below it). An
uploaded algorithm's parameter without ``maths`` shows its description alone.
"""

from __future__ import annotations

import re

import pytest
from bs4 import BeautifulSoup, Tag
from fastapi.testclient import TestClient

from federation.registry import Registry
from tests.central_fixtures import (
    ADMIN,
    browser_sign_in,
    htmx_headers,
    meandraw_files,
    upload_algorithm,
)

BUILTINS = Registry.with_builtins()

NOTATION = re.compile(
    r"\^|=|\bX'|\bx'|\blambda\b|\btheta\b|\bbeta\b|\bdiag\b|Gram|Hessian|\bNewton\b|\bp\b|"
    r"\bSSE\b|\bposterior\b|\bchi|max\("
)
"""What belongs in the maths, not in the plain words."""


@pytest.mark.parametrize("name", BUILTINS.names())
def test_every_builtin_parameter_has_plain_words_and_its_maths(name: str) -> None:
    algorithm = BUILTINS.get(name)
    for parameter, schema in algorithm.schema["properties"].items():
        words, maths = schema.get("description", ""), schema.get("maths", "")
        assert schema.get("title"), f"{name} {parameter}: no title"
        assert len(words) > 40, f"{name} {parameter}: the help says too little: {words!r}"
        found = NOTATION.search(words)
        assert found is None, f"{name} {parameter}: {found.group()!r} in the plain words {words!r}"
        assert maths and maths != words, f"{name} {parameter}: no maths"


def test_the_help_of_a_parameter_is_worded_alike_wherever_it_means_the_same() -> None:
    """One parameter name, one meaning: its help differs between built-ins only where the
    method does (which targets are fitted step by step; a chained method's several targets;
    how each family makes a Newton step)."""
    plain: dict[str, set[str]] = {}
    for algorithm in BUILTINS.all():
        for parameter, schema in algorithm.schema["properties"].items():
            plain.setdefault(parameter, set()).add(schema["description"])
    alike = (
        "imputations",
        "iteration_before_first_imputation",
        "iteration_between_imputations",
        "ridge",
        "donors",
        "secure_aggregation",
    )
    assert all(len(plain[p]) == 1 for p in alike), {p: plain[p] for p in alike}
    assert len(plain["min_rows"]) == 2  # "for any of the targets" in the chained family
    assert len(plain["max_iter"]) == 2  # the step-by-step target types each family offers


def _one(where: BeautifulSoup | Tag, selector: str) -> Tag:
    found = where.select_one(selector)
    assert found is not None, f"nothing matches {selector!r}"
    return found


def _wizard_parameters(central: TestClient, algorithm: str) -> BeautifulSoup:
    csrf = browser_sign_in(central, ADMIN["username"], ADMIN["password"])
    response = central.get(
        f"/jobs/new/parameters?algorithm={algorithm}", headers=htmx_headers(csrf)
    )
    assert response.status_code == 200, response.text
    return BeautifulSoup(response.text, "html.parser")


def test_the_wizard_shows_the_plain_words_and_the_maths_one_click_away(
    central: TestClient,
) -> None:
    page = _wizard_parameters(central, "SIMICE")
    schema = BUILTINS.get("SIMICE").schema["properties"]

    fields = page.select("div.field")
    assert len(fields) == len(schema)
    for field in fields:
        name = str(_one(field, "label")["for"]).removeprefix("p-")
        assert _one(field, f"#h-p-{name}").get_text() == schema[name]["description"]
        maths = _one(field, "details.maths")
        assert not maths.has_attr("open")  # one click away, not in the way
        assert _one(maths, "summary").get_text(strip=True) == "The maths"
        assert _one(maths, "p").get_text() == schema[name]["maths"]
        # the plain words come first, the maths below them
        assert str(field).index(f'id="h-p-{name}"') < str(field).index("details")


def test_a_parameter_without_maths_shows_its_description_alone(central: TestClient) -> None:
    upload_algorithm(central, meandraw_files())
    page = _wizard_parameters(central, "MEANDRAW")

    fields = page.select("div.field")
    assert fields and all(_one(f, "p.hint").get_text() for f in fields)
    assert not page.select("details.maths")
