"""The site checks and the site term on the designs of issue #12 (tests/test_site_effect.py).

Prints, over --replications replications: how often the test of equal coefficients across sites
rejects at 5% (AVGMMI from the sites' own fits, SIMI from its per-site sums) when x1's effect is
1.0 at central and 0.4 at the sites, and when the sites are alike; and the bias of the mean of
central's imputed y (imputed minus true, over the replications and M = 5 datasets) in the
intercept-shift design, with site_effect none and intercept. Usage:

    PYTHONPATH=. .venv/bin/python bench/site_effect.py --replications 200
"""

from __future__ import annotations

import argparse
import logging

from tests.test_site_effect import (
    equal_sites,
    heterogeneous_effect,
    imputed_mean_bias,
    rejection_rate,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=100)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # every job warns that its sites differ: by design here
    r = args.replications
    print(f"test of equal coefficients, rejection rate at 5% over {r} replications")
    for algorithm in ("AVGMMI", "SIMI"):
        differing = rejection_rate(algorithm, heterogeneous_effect, r)
        alike = rejection_rate(algorithm, equal_sites, r)
        print(f"  {algorithm:<7} effect 1.0 vs 0.4: {differing:.3f}   equal sites: {alike:.3f}")
    print(f"bias of central's imputed mean, intercept-shift design, {r} replications x M = 5")
    for algorithm in ("SIMI", "SIMICE"):
        none = imputed_mean_bias(algorithm, "none", r)
        intercept = imputed_mean_bias(algorithm, "intercept", r)
        print(f"  {algorithm:<7} site_effect=none: {none:+.4f}   intercept: {intercept:+.4f}")


if __name__ == "__main__":
    main()
