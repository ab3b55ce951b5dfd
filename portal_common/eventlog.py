"""An event log as people read it: the newest entry first, a cycle's fits on one line.

Both portals show a job's events (``federation.job.JobEvent``). A chained-equation job fits
every target once per cycle; shown one fit a line, a small job's log ran to a hundred lines
and its newest entry was out of sight. Here the consecutive fits of one cycle become one line
("cycle 3: fitted 'bmi' on 800 rows, 'smoker' on 790 rows") and the newest line comes first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from federation.job import JobEvent

_FIT = re.compile(r"^cycle (\d+): fitted (.+)$")


def grouped(events: Sequence[JobEvent]) -> list[JobEvent]:
    """``events`` (oldest first) with each cycle's consecutive fits merged into one line,
    newest first; the merged line has the time of the cycle's last fit."""
    lines: list[JobEvent] = []
    cycle: str | None = None
    for event in events:
        found = _FIT.match(event.message) if event.kind == "fit" else None
        last = lines[-1] if lines else None
        if (
            found is not None
            and last is not None
            and cycle == found.group(1)
            and last.kind == "fit"
            and last.site == event.site
        ):
            lines[-1] = replace(last, message=f"{last.message}, {found.group(2)}", at=event.at)
            continue
        cycle = found.group(1) if found is not None else None
        lines.append(event)
    lines.reverse()
    return lines
