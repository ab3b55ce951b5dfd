"""The event log as people read it: newest first, a cycle's fits on one line."""

from __future__ import annotations

from federation.job import JobEvent
from portal_common.eventlog import grouped


def _fit(cycle: int, target: str, at: float, site: str | None = None) -> JobEvent:
    return JobEvent(
        kind="fit", message=f"cycle {cycle}: fitted '{target}' on 8 rows", at=at, site=site
    )


def test_a_cycles_fits_share_a_line_and_the_newest_comes_first() -> None:
    events = [
        JobEvent(kind="log", message="opened", at=1.0),
        _fit(1, "bmi", 2.0),
        _fit(1, "smoker", 3.0),
        _fit(2, "bmi", 4.0),
        _fit(2, "smoker", 5.0),
        JobEvent(kind="log", message="imputed dataset 1 of 2 after cycle 2", at=6.0),
        _fit(3, "bmi", 7.0),
    ]
    lines = grouped(events)
    assert [line.message for line in lines] == [
        "cycle 3: fitted 'bmi' on 8 rows",
        "imputed dataset 1 of 2 after cycle 2",
        "cycle 2: fitted 'bmi' on 8 rows, 'smoker' on 8 rows",
        "cycle 1: fitted 'bmi' on 8 rows, 'smoker' on 8 rows",
        "opened",
    ]
    assert lines[2].at == 5.0
    assert [e.message for e in events][1] == "cycle 1: fitted 'bmi' on 8 rows"  # not modified


def test_fits_of_other_sites_or_kinds_stay_apart() -> None:
    events = [
        _fit(1, "bmi", 1.0, site="north"),
        _fit(1, "smoker", 2.0, site="south"),
        JobEvent(kind="warning", message="cycle 1: fitted 'x' on 8 rows", at=3.0),
    ]
    assert len(grouped(events)) == 3
