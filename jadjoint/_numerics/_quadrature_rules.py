"""Quadrature rules on a step."""

import numpy as np


def gauss_legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """The `nodes`-point Gauss–Legendre rule on `[0, 1]` (exact for polynomials of
    degree `2 nodes − 1`): node positions as fractions of the interval, and weights
    summing to 1."""
    abscissae, weights = np.polynomial.legendre.leggauss(nodes)
    return (abscissae + 1) / 2, weights / 2
