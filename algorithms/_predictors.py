"""A target's design matrix at a participant: its predictors (the job's predictor list, mice's
predictorMatrix), each factor and each categorical or ordinal target expanded to one 0/1 column
per level but the first (treatment coding, the job's level order, as mice codes a factor), the
target, then the intercept's ones.

A site keeps its rows as ``Z`` (``_stats``: the job's columns, a factor as its level's index
0..K-1, a categorical or ordinal target as its level values, then ones). The maths of
``_stats``, ``_glm``, ``_newton`` and the methods take a design as "every other column of the
matrix, ones last"; :func:`target_matrix` gives each target such a matrix. With the default
design (every other column, none expanded) that is ``Z`` itself, so a numeric job computes
exactly what it did before roles existed; otherwise a new matrix, built from ``Z`` for the fit
at hand (its rows are the current values, imputed cells included).
"""

from __future__ import annotations

import numpy as np

from federation.job import Design


def target_matrix(z: np.ndarray, design: Design, column: int) -> tuple[np.ndarray, int]:
    """The matrix of target ``column``'s design (predictors, the target, ones last) from ``Z``,
    and the target's column in it."""
    if design.default:
        return z, column
    matrix = np.empty((z.shape[0], design.p + 1), dtype=np.float64)
    k = 0
    for source, levels in zip(design.sources, design.levels, strict=True):
        if levels:
            codes = z[:, source]
            for level in levels[1:]:
                np.equal(codes, level, out=matrix[:, k], casting="unsafe")
                k += 1
        else:
            matrix[:, k] = z[:, source]
            k += 1
    if design.site_terms:  # Z's site columns sit just before its ones
        matrix[:, k : k + design.site_terms] = z[:, -1 - design.site_terms : -1]
        k += design.site_terms
    matrix[:, k] = z[:, column]
    matrix[:, k + 1] = 1.0
    return matrix, k
