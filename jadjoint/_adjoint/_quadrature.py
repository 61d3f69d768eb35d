"""`QuadratureAdjoint`: only `w` is stepped backwards; the parameter gradient is a
Gauss–Legendre quadrature over the accepted backward steps."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._backward import (
    SavedCotangents,
    rates_along,
    solve_across_saves,
    solve_backwards,
)
from .._numerics import gauss_legendre, over_batches
from ._interpolating import SEGMENT_STEPS, AbstractSegmentedAdjoint, integrate_injected


def _w_rates(t, w, args):
    return rates_along(*args, w, t)[1]


STEPS_PER_BATCH = 16


def _integral_over_steps(system, dense, backward, unravel, nodes: int) -> PyTree:
    """`∫ q̇ dt` over the backward solve's accepted steps, by `nodes`-point
    Gauss–Legendre quadrature on each step (exact for polynomials of degree
    `2 nodes − 1`), with `w` from the backward dense output. The solve ends at the
    jumps of `w`, so `w` is smooth on each step. The steps are taken
    `STEPS_PER_BATCH` at a time, all their nodes through one vmapped VJP."""
    fractions, weights = gauss_legendre(nodes)
    interpolation = backward.interpolation
    times = interpolation.ts * interpolation.direction

    def qdot(t):
        return rates_along(system, dense, unravel(backward.evaluate(t)), t)[2]

    def batch(k, real, total):
        k = jnp.where(real, k, 0)
        a, b = times[k][:, None], times[k + 1][:, None]
        ts = (a + (b - a) * fractions).reshape(-1)
        scale = jnp.abs(b - a) * jnp.asarray(weights, times.dtype)
        scale = jnp.where(real[:, None], scale, 0).reshape(-1)
        values = jax.vmap(qdot)(ts)
        return jtu.tree_map(
            lambda s, v: s + jnp.tensordot(scale, v, axes=1), total, values
        )

    zero = jtu.tree_map(jnp.zeros_like, system.params.diff)
    steps = interpolation.ts_size - 1
    return over_batches(batch, zero, steps, times.shape[0] - 1, STEPS_PER_BATCH)


class QuadratureAdjoint(AbstractSegmentedAdjoint):
    """Integrates only `w` backwards under error control, with `x(t)` from the dense
    output of the forward solve; the parameter gradient `∫ (c̄ f_p + λᵀ h_p) dt` is
    accumulated by Gauss–Legendre quadrature on each accepted backward step, outside
    the error-controlled state, and the stages differentiate with respect to `x`
    only. With an explicit Runge–Kutta solver (and the times not differentiated) it
    runs on the default method's loop along the forward steps
    (`jadjoint/_backward/_along_steps.py`), the observations injected; there the
    default also steps only `w`, accumulating `q` from the stages' own VJPs, and the
    two cost about the same. Otherwise it runs one diffrax solve per save interval
    and a quadrature over each solve's dense output.

    **Arguments:**

    - `nodes`: Gauss–Legendre points per step (default 3: exact to degree 5, the
        order of Tsit5).
    - `segment_steps`: the forward solve's steps per stored segment, as for
        [`jadjoint.InterpolatingAdjoint`][].

    Reverse over reverse (a gradient of the gradient) works with explicit
    Runge–Kutta solvers only; use [`jadjoint.InterpolatingAdjoint`][] otherwise.

    !!! cite "Reference"

        SciMLSensitivity's `GaussAdjoint` (the same quadrature on the backward steps).
    """

    nodes: int = eqx.field(static=True, default=3)
    segment_steps: int = eqx.field(static=True, default=SEGMENT_STEPS)

    def integrate_segment(self, *, system, forward, jumps, segment, v, q, dt0, options):
        dense = self.segment_dense(system, forward, segment, options)
        if isinstance(jumps, SavedCotangents):
            return integrate_injected(
                system,
                dense,
                jumps,
                segment,
                v=v,
                q=q,
                options=options,
                nodes=self.nodes,
            )

        def solve(y, **interval):
            w, q = y
            w, steps, backward, unravel = solve_backwards(
                _w_rates,
                w,
                **interval,
                args=(system, dense),
                options=options,
                carries_q=False,
                dense=True,
            )
            integral = _integral_over_steps(
                system, dense, backward, unravel, self.nodes
            )
            return (w, jtu.tree_map(jnp.subtract, q, integral)), steps

        (v, q), steps = solve_across_saves(
            solve,
            (v, q),
            w_at=0,
            jumps=jumps,
            segment=segment,
            dt0=dt0,
        )
        return v, q, steps
