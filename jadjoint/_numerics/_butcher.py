"""An explicit Runge–Kutta method's Butcher tableau as square arrays."""

import diffrax
import numpy as np


class Stages:
    """The `s` stages of an explicit Runge–Kutta method from diffrax's public
    `ButcherTableau`, first stage included:

        k_j = h φ(t0 + c_j h, y0 + Σ_{l<j} a_jl k_l),   y1 = y0 + Σ_j b_j k_j,

    and the embedded error estimate `Σ_j b_error_j k_j`. `a` is `s × s`, strictly
    lower triangular; all are NumPy arrays, for the forward step's unrolled stages
    and the backward loop's scanned ones alike."""

    def __init__(self, tableau: diffrax.ButcherTableau):
        count = len(tableau.c) + 1
        self.a = np.zeros((count, count))
        for j, row in enumerate(tableau.a_lower):
            self.a[j + 1, : j + 1] = row
        self.c = np.concatenate([[0.0], tableau.c])
        self.b = np.asarray(tableau.b_sol)
        self.b_error = np.asarray(tableau.b_error)
        self.count = count
