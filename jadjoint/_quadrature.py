"""`QuadratureAdjoint`: only `w` is stepped backwards; the parameter gradient is a
Gauss–Legendre quadrature over the accepted backward steps."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from . import _dense_output as dense_output
from ._methods import AbstractAdjointMethod, solve_backwards


def _w_rates(t, w, args):
    system, forward = args
    x, _ = dense_output.evaluate(forward, t)
    xdot_guess = None if system.is_explicit else dense_output.derivative(forward, t)[0]
    _, wdot, _ = system.rates(x, w, t, xdot_guess)
    return wdot


def _integral_over_steps(system, forward, backward, nodes: int) -> PyTree:
    """`∫ q̇ dt` over the backward solve's accepted steps, by `nodes`-point
    Gauss–Legendre quadrature on each step (exact for polynomials of degree
    `2 nodes − 1`), with `w` from the backward dense output."""
    abscissae, weights = np.polynomial.legendre.leggauss(nodes)
    interpolation = backward.interpolation
    times = interpolation.ts * interpolation.direction

    def qdot(t):
        x, _ = dense_output.evaluate(forward, t)
        guess = None if system.is_explicit else dense_output.derivative(forward, t)[0]
        return system.rates(x, backward.evaluate(t), t, guess)[2]

    def step(k, total):
        a, b = times[k], times[k + 1]
        ts = 0.5 * (a + b) + 0.5 * (b - a) * abscissae
        values = jax.vmap(qdot)(ts)
        scale = 0.5 * jnp.abs(b - a) * jnp.asarray(weights, ts.dtype)
        return jtu.tree_map(
            lambda s, v: s + jnp.tensordot(scale, v, axes=1), total, values
        )

    zero = jtu.tree_map(jnp.zeros_like, system.params.diff)
    return jax.lax.fori_loop(0, interpolation.ts_size - 1, step, zero)


class QuadratureAdjoint(AbstractAdjointMethod):
    """Integrates only `w` backwards under error control, with `x(t)` from the dense
    output of the forward solve; the parameter gradient `∫ (c̄ f_p + λᵀ h_p) dt` is
    accumulated by Gauss–Legendre quadrature on each accepted backward step, outside
    the error-controlled state (as SciMLSensitivity's GaussAdjoint). The stepped state
    has the size of `x` whatever the size of `p`: the method for large `p`.

    **Arguments:**

    - `nodes`: Gauss–Legendre points per step (default 3: exact to degree 5, the
        order of Tsit5).

    Not differentiable a second time (its quadrature loop has a data-dependent trip
    count): for reverse-over-reverse use [`jadjoint.InterpolatingAdjoint`][]."""

    nodes: int = eqx.field(static=True, default=3)

    @property
    def keeps_dense_output(self) -> bool:
        return True

    def integrate_interval(
        self, system, forward, t_right, t_left, x_left, x_right, w, q, dt0, options
    ):
        del x_left, x_right
        w, steps, backward = solve_backwards(
            _w_rates,
            w,
            t_right,
            t_left,
            dt0,
            (system, forward),
            options,
            carries_q=False,
            dense=True,
        )
        integral = _integral_over_steps(system, forward, backward, self.nodes)
        q = jtu.tree_map(jnp.subtract, q, integral)
        return w, q, steps
