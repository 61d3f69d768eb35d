"""The forward solution at any time, from diffrax's dense output.

`diffrax.DenseInterpolation.evaluate` returns NaN outside `[t0, t1]`. Some implicit
solvers evaluate stages beyond the end of a step (Kvaerno5 at 1.23 h), so the backward
solve's last step, ending at `t0`, would see NaNs and be rejected until `max_steps`.
Here the first and last steps' polynomials are extrapolated instead, built from the
public fields of the interpolation (`ts`, `infos`, `interpolation_cls`).
"""

import diffrax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree


def step(interpolation: diffrax.DenseInterpolation, k) -> tuple[dict, Array, Array]:
    """The dense information of step `k` and the step's end times `(t_k, t_{k+1})`:
    `interpolation.interpolation_cls(t0=t_k, t1=t_{k+1}, **info)` is its polynomial."""
    info = jtu.tree_map(lambda a: a[k], interpolation.infos)
    return info, interpolation.ts[k], interpolation.ts[k + 1]


def polynomial(interpolation: diffrax.DenseInterpolation, k):
    """The polynomial of step `k` (an `interpolation.interpolation_cls`)."""
    info, t0, t1 = step(interpolation, k)
    return interpolation.interpolation_cls(t0=t0, t1=t1, **info)


def _local_polynomial(interpolation: diffrax.DenseInterpolation, t):
    steps = interpolation.ts_size - 1
    index = jnp.searchsorted(interpolation.ts, t, side="left") - 1
    return polynomial(interpolation, jnp.clip(index, 0, jnp.maximum(steps - 1, 0)))


def evaluate(interpolation: diffrax.DenseInterpolation, t) -> PyTree:
    """The dense output at `t`, polynomially extrapolated outside `[t0, t1]` (the
    initial state when the solve had zero length)."""
    out = _local_polynomial(interpolation, t).evaluate(t)
    trivial = interpolation.ts_size <= 1
    return jtu.tree_map(
        lambda y0, y: jnp.where(trivial, y0, y), interpolation.y0_if_trivial, out
    )


def derivative(interpolation: diffrax.DenseInterpolation, t) -> PyTree:
    """The time derivative of the dense output at `t`."""
    return _local_polynomial(interpolation, t).derivative(t)
