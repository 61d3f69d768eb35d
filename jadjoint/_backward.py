"""One backward solve of the adjoint over a segment, on diffrax, and the adjoint's
rates along a forward dense interpolation: the backward pass wherever the
observations are not injected at forward step starts (`_stepwise.py` is the one
where they are).

The backward pass integrates `(v, q)` with `v = w + o(t)` the adjoint with its
save-time jumps folded in (`_jumps.py`), so that save times cost one step end each
rather than one solve each.
"""

import diffrax
import jax
import jax.flatten_util
import jax.numpy as jnp
from jaxtyping import PyTree

from . import _dense_output as dense_output
from ._adjoint import AdjointSystem
from ._differentiation_mode import inner_adjoint
from ._errors import raise_or_nan
from ._jumps import Jumps, below
from ._options import Options


def solve_backwards(
    rates,
    y_right: PyTree,
    *,
    t_right,
    t_left,
    dt0,
    args,
    options: Options,
    jumps: Jumps,
    carries_q: bool = True,
    dense: bool = False,
):
    """`y(t_left)` from `y(t_right)`, `t_left < t_right`, by one diffrax solve in
    reversed time that steps to every save time in between, and the number of accepted
    steps; with `dense`, also the diffrax solution (of the flat state) and the
    function that unflattens its values. A failed solve that does not raise
    (`throw=False`) gives NaN.

    With `carries_q`, `y` is a tuple ending with the parameter integral `q`, which the
    error control ignores. The solve may take `max_steps` steps plus one per save
    time. diffrax steps a flat copy of `y`: a Runge–Kutta step then costs a few array
    operations, not a few per leaf of `y` (a neural network's parameters in `q` have
    many leaves, and on CPU each operation in the loop carries a fixed cost)."""
    flat_right, unravel = jax.flatten_util.ravel_pytree(y_right)
    controlled = None
    if carries_q:
        controlled = (
            flat_right.size - jax.flatten_util.ravel_pytree(y_right[-1])[0].size
        )

    def flat_rates(t, y, args):
        return jax.flatten_util.ravel_pytree(rates(t, unravel(y), args))[0]

    controller = jumps.controller(options.controller(controlled), t_left, t_right)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(flat_rates),
        options.solver,
        jnp.maximum(below(t_right), t_left),
        t_left,
        -dt0,
        flat_right,
        args=args,
        saveat=diffrax.SaveAt(t1=True, dense=dense),
        stepsize_controller=controller,
        max_steps=options.max_steps + jumps.count,
        adjoint=inner_adjoint(),
        throw=False,
        progress_meter=options.progress_meter,
    )
    flat_left = solution.ys[-1]
    y_left = unravel(raise_or_nan(solution.result, flat_left, options.throw))
    steps = solution.stats["num_accepted_steps"]
    if not dense:
        return y_left, steps
    return y_left, steps, solution, unravel


def rates_along(
    system: AdjointSystem,
    interpolation: diffrax.DenseInterpolation,
    jumps: Jumps,
    v: PyTree,
    t,
):
    """`(ẋ, ẇ, q̇)` at `t` with `x(t)` from the forward dense `interpolation` (its
    derivative starts Newton for an implicit `h`) and `w = v − o(t)`."""
    x = dense_output.evaluate(interpolation, t)[0]
    guess = lambda: dense_output.derivative(interpolation, t)[0]
    return system.rates(x, jumps.w(v, t), t, guess)
