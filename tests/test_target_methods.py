"""The registry of target methods (``algorithms.methods``): every method has every part, the
built-ins declare what it sends, it round-trips through a simulated SIMI and SIMICE job, and an
unknown method is refused wherever a method can be named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from algorithms import _chains, methods
from algorithms.methods import METHODS, Method
from federation.errors import AlgorithmInvalid, InputError, ProtocolError
from federation.job import JobSpec, make_targets
from federation.registry import BUILTIN_DIR, read_algorithm, read_folder
from federation.replies import PAIRS_WIDTH, Dims, ReplySchema
from tests.helpers import builtin, run, table

POOLED = ("SIMI", "SIMICE", "IMI", "IMICE")
"""The built-ins whose sites answer each method's own operations."""
EVERY_BUILTIN = ("SIMI", "SIMICE", "IMI", "IMICE", "AVGMMI", "AVGMMICE", "CSLMI", "CSLMICE")
ONE_PREDICTOR = ("AVGMMI", "AVGMMICE", "CSLMI", "CSLMICE")
"""The one-shot families average or correct one coefficient per design column: they offer the
methods of one linear predictor (not categorical or ordinal)."""


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_has_every_part(name: str) -> None:
    method = METHODS[name]

    assert isinstance(method, Method) and method.name == name
    for text in (method.label, method.when, method.expects):
        assert isinstance(text, str) and text.strip() and "\n" not in text
    assert method.fitting in ("one round trip", "Newton")
    assert isinstance(method.residual_variance, bool)
    assert method.replies and set(method.site_statistics()) == set(method.replies)
    # Its declared replies are valid declarations (what params.json would say).
    parsed = ReplySchema.parse({"replies": dict(method.replies), "parameters": {}})
    for operation, keys in method.replies.items():
        assert "n" in keys and parsed.operations[operation]["n"].kind == "rows"
    for callable_part in (method.fit_pooled, method.fit_own, method.score, method.draw):
        assert callable(callable_part)


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("algorithm", EVERY_BUILTIN)
def test_every_builtin_offers_every_method_and_declares_its_replies(
    name: str, algorithm: str
) -> None:
    meta = json.loads((BUILTIN_DIR / algorithm / "params.json").read_text())
    if algorithm in ONE_PREDICTOR and METHODS[name].levels:
        assert name not in meta["capabilities"]["target_types"]
        return
    assert name in meta["capabilities"]["target_types"]
    if algorithm in POOLED:
        # the chained family answers for every chain at once: a leading m on each value
        declared = _chains.declared if algorithm.endswith("CE") else dict
        for operation, keys in declared(METHODS[name].replies).items():
            assert meta["replies"][operation] == dict(keys), (algorithm, operation)


def _data(method: Method, seed: int, rows: int) -> np.ndarray:
    """x1, x2 standard normal, g Gaussian, then the method's own column t around 0.5 + x1 - x2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    eta = 0.5 + x @ np.array([0.8, -0.6])
    g = 1.0 + x[:, 0] + rng.normal(size=rows)
    values = np.column_stack([x, g, method.simulate(eta, rng)])
    values[rng.random(rows) < 0.2, 3] = np.nan
    values[rng.random(rows) < 0.15, 2] = np.nan
    return values


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_round_trips_through_simi_and_simice(name: str) -> None:
    """Each method imputes its column in a simulated SIMI and SIMICE job with two sites: every
    imputed value is one its column may hold, and the report names the method."""
    method = METHODS[name]
    columns = ("x1", "x2", "g", "t")
    central = table("central", columns, _data(method, 1, 150))
    sites = {s: table(s, columns, _data(method, k + 2, 200)) for k, s in enumerate(("a", "b"))}
    complete = central.values.copy()  # SIMI needs central's predictors complete
    complete[:, 2] = np.nan_to_num(complete[:, 2])
    simi_central = table("central", columns, complete)

    simi = run("SIMI", simi_central, sites, [("t", name)], imputations=2)
    simice = run(
        "SIMICE",
        central,
        sites,
        [("g", "gaussian"), ("t", name)],
        imputations=2,
        iteration_before_first_imputation=2,
        iteration_between_imputations=1,
    )

    for result in (simi, simice):
        assert {f["type"] for f in result.report["fits"] if f["target"] == "t"} == {name}
        missing = np.isnan(result.table.values[:, 3])
        assert missing.any()
        observed = result.table.values[~missing, 3]
        levels = tuple(np.unique(observed)) if method.levels else ()
        for m in (1, 2):
            imputed = result.dataset(m)[missing, 3]
            assert np.isfinite(imputed).all()
            assert not method.invalid(imputed, levels).any()
            if name == "pmm":  # donors are central's own observed rows
                assert np.isin(imputed, observed).all()


# ---------------------------------------------------------------- unknown methods


def test_an_unknown_method_is_refused_naming_the_field_and_the_known_ones() -> None:
    with pytest.raises(InputError) as raised:
        methods.get("foo", field="targets.0.type")

    message = str(raised.value)
    assert message.startswith("targets.0.type: unknown method 'foo'")
    assert all(name in message for name in METHODS)


def test_an_unknown_method_in_a_job_names_the_target() -> None:
    with pytest.raises(InputError) as raised:
        make_targets(["x", "y"], [("y", "foo")], label="the job's columns")

    message = str(raised.value)
    assert "target 'y'" in message and "'foo'" in message and "gaussian" in message


def test_a_job_spec_with_an_unknown_method_is_refused_by_a_site() -> None:
    """A site reading central's job spec refuses a method it does not know, rather than
    treating it as some other method."""
    spec = JobSpec(
        job_id="j",
        algorithm="SIMI",
        version="2.0.0",
        digest="0" * 64,
        columns=("x", "y"),
        targets=(),
        params={},
        seed=1,
        sites=(),
    ).to_wire()
    spec["targets"] = [{"index": 2, "name": "y", "type": "foo"}]

    with pytest.raises(InputError) as raised:
        JobSpec.from_wire(spec)

    assert "'foo'" in str(raised.value) and "gaussian" in str(raised.value)


def test_a_package_declaring_an_unknown_method_is_invalid() -> None:
    files = read_folder(BUILTIN_DIR / "SIMI")
    meta = json.loads(files["params.json"])
    meta["capabilities"]["target_types"] = ["gaussian", "foo"]
    files["params.json"] = json.dumps(meta).encode()

    with pytest.raises(AlgorithmInvalid) as raised:
        read_algorithm("SIMI", files)

    message = str(raised.value)
    assert "capabilities.target_types" in message and "gaussian" in message


def test_the_labels_pages_show_come_from_the_registry() -> None:
    assert methods.label("gaussian") == "continuous"
    assert methods.label("logistic") == "binary"
    assert builtin("SIMI").capabilities.target_types == tuple(METHODS)


def test_a_third_derivative_reply_holds_the_parameter_pairs_of_a_small_fit() -> None:
    """``u`` is t(t+1)/2 for a fit of at most PAIRS_WIDTH parameters and 0 beyond, so that a
    Newton method's ``_warm`` reply (t x u) stays bounded; other symbols are refused."""
    schema = ReplySchema.parse({"replies": {"warm": {"third": "float[t,u]"}}, "parameters": {}})
    narrow, wide = Dims.of(4, 1), Dims.of(PAIRS_WIDTH + 1, 1)
    categorical = Dims.of(4, 1, {2: (8, 3)})  # 4 design columns, 3 levels: t = 8, u = 36

    checked = schema.check("warm", {"third": np.ones((4, 10))}, dims=narrow, bounds=None)

    assert checked["third"].shape == (4, 10)
    with pytest.raises(ProtocolError, match=r"has shape \[4, 9\], declared \[4, 10\]"):
        schema.check("warm", {"third": np.ones((4, 9))}, dims=narrow, bounds=None)
    with pytest.raises(ProtocolError, match=r"declared \[17, 0\]"):
        schema.check("warm", {"third": np.ones((17, 153))}, dims=wide, bounds=None)
    assert schema.check("warm", {"third": np.ones((8, 36))}, dims=categorical, bounds=None)
    with pytest.raises(ProtocolError, match=r"declared \[8, 36\]"):
        schema.check("warm", {"third": np.ones((4, 10))}, dims=categorical, bounds=None)
    with pytest.raises(AlgorithmInvalid, match="dimension 'v' is not p, c, k, t, l, u"):
        ReplySchema.parse({"replies": {"warm": {"third": "float[p,v]"}}, "parameters": {}})


@pytest.mark.parametrize(
    ("cells", "suggested"),
    [
        ([0, 1, 1, 0, np.nan, 1] * 5, "logistic"),
        ([1, 2, 3, 4, 5, np.nan] * 5, "categorical"),
        ([0, 3, 7, 12, 25, 40, 2, 1, 9, 14, 17, 30, np.nan], "pmm"),  # counts: whole, many
        (list(np.linspace(-2.5, 3.5, 40)), "pmm"),
        ([1.5, 2.25, np.nan, 3.75], "gaussian"),  # too few values to match donors among
        ([1.0, 2.0] * 10, "pmm"),  # two codes that are not 0/1: not a binary target
    ],
)
def test_the_wizard_suggests_a_method_from_the_columns_counts(
    cells: list[float], suggested: str
) -> None:
    """0/1: logistic; 3 to 10 whole codes: categorical (ordinal is the user's call); other
    numbers: pmm, which keeps imputations among observed values; gaussian when there are too
    few observed values for donors."""
    assert methods.suggest(methods.Observed.of(np.array(cells, dtype=float))) == suggested
