"""MEANDRAW, site half: the count, sum and centred sum of squares of the target's values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # an uploaded remote half runs in a sandbox: numpy and the standard library
    from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep the target's observed values (every other column is ignored)."""
    (target,) = site.targets
    column = site.data.values[:, target.column]
    observed = ~np.isnan(column)
    site.state["y"] = column[observed]
    return {
        "rows_used": int(observed.sum()),
        "left_out": {"{target} missing": int((~observed).sum())},
    }


def moments(site: SiteJob) -> dict[str, Any]:
    """n, the sum, and the sum of squared deviations from this site's own mean."""
    y: np.ndarray = site.state["y"]
    n = int(y.size)
    total = float(y.sum())
    ss = float(np.square(y - total / n).sum()) if n else 0.0
    return {"n": n, "sum": total, "ss": ss}


HANDLERS = {"moments": moments}
