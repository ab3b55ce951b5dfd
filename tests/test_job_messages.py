"""What a site reads of a job's failure: where it failed, and only its own site's reason."""

from __future__ import annotations

import pytest

from portal_central.jobs.messages import FAILED_AT_CENTRAL, for_viewer

CENTRAL = (
    "central.csv: SIMI imputes only rows whose predictors are complete, but 12 row(s) miss "
    "'bmi' and a predictor too ('smoker' in 12)"
)
SITES = (
    "site 'north1': north.csv: only 8 usable row(s) of 9, fewer than the minimum of 10 "
    "(min_rows); this site does not take part; site 'south2': did not answer 'gaussian_stats' "
    "within 300 s (the request deadline)"
)


def test_the_admin_reads_every_message_whole() -> None:
    assert for_viewer(CENTRAL, state="failed", site_id=None) == CENTRAL
    assert for_viewer(SITES, state="failed", site_id=None) == SITES


def test_a_site_reads_only_that_central_failed() -> None:
    shown = for_viewer(CENTRAL, state="failed", site_id="north1")

    assert shown == FAILED_AT_CENTRAL
    assert "central.csv" not in shown and "12" not in shown


@pytest.mark.parametrize(
    ("site", "own"),
    [
        ("north1", "north.csv: only 8 usable row(s) of 9"),
        ("south2", "did not answer 'gaussian_stats' within 300 s"),
    ],
)
def test_a_site_reads_which_sites_failed_and_its_own_reason(site: str, own: str) -> None:
    shown = for_viewer(SITES, state="failed", site_id=site)

    assert shown.startswith("failed at site 'north1', site 'south2'; this site: ")
    assert own in shown
    other = "did not answer" if site == "north1" else "north.csv"
    assert other not in shown


def test_other_states_read_the_same_for_everyone() -> None:
    message = "2 imputed datasets; 3 round trips"

    assert for_viewer(message, state="completed", site_id="north1") == message
