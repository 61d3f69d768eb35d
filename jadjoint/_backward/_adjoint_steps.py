"""Runge–Kutta steps of the continuous adjoint within one forward step, for the loops
along the forward steps (`_along_steps.py`, `_step_derivatives.py`): the stages from
the solver's public Butcher tableau, `x(t)` from the forward step's polynomial, and
diffrax's `PIDController` in the reversed time `τ = −t`, on `w` alone.

The loops are our own because `diffeqsolve` would look `t` up in the whole dense
output at every stage, stop at each forward step start through
`ClipStepSizeController` (losing the step-size proposal each time) and carry the
parameter integral `q` as part of the stepped state, stages and all: a neural
network's weights, seven times per step. Here `q` is accumulated as
`q ← q + h Σ b_j q̇_j` on accepted steps, the `q̇_j` coming out of the same VJPs as
the stages of `w` (its error is not controlled: the seminorm of `LeadingSeminorm`),
or by Gauss–Legendre quadrature on each accepted step.
"""

import diffrax
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._numerics import Stages, gauss_legendre
from .._options import Options
from ._system import AdjointSystem


class AdjointSteps:
    """Steps of the adjoint `(w, q)` of `system` for an explicit Runge–Kutta solve
    of `options.solver`; with `quadrature_nodes`, `q` by Gauss–Legendre quadrature
    on each step, `w` at the nodes read from the step's own dense output (the
    stages then differentiate with respect to `x` only)."""

    def __init__(
        self,
        system: AdjointSystem,
        options: Options,
        w: PyTree,
        quadrature_nodes: int | None = None,
    ):
        self.system = system
        self.options = options
        self.quadrature_nodes = quadrature_nodes
        self.controller = options.controller()
        self.error_order = options.solver.error_order(
            diffrax.ODETerm(lambda t, y, a: y)
        )
        self.butcher = Stages(options.solver.tableau)
        self.fsal = options.solver.tableau.fsal
        self.dtype = jnp.result_type(*jtu.tree_leaves(w))
        self.a, self.b, self.b_error = (
            jnp.asarray(weights, self.dtype)
            for weights in (self.butcher.a, self.butcher.b, self.butcher.b_error)
        )

    def _adjoint_rates(self, polynomial, t, w):
        x = polynomial.evaluate(t)[0]
        _, wdot, qdot = self.system.rates(x, w, t, lambda: polynomial.derivative(t)[0])
        return wdot, qdot

    def rates(self, polynomial, t, w) -> tuple[PyTree, PyTree | None]:
        """`(ẇ, q̇)` for the stages, with `x` from the forward step's `polynomial`;
        `q̇` is `None` (not computed) when `q` is accumulated by quadrature."""
        wdot, qdot = self._adjoint_rates(polynomial, t, w)
        return wdot, None if self.quadrature_nodes else qdot

    def _weighted(self, weights, ks):
        return jtu.tree_map(lambda K: jnp.tensordot(weights, K, axes=1), ks)

    def _quadrature(self, polynomial, t, h, w, w_next, ks):
        """`∫ q̇ dt` over the step from `t` by `h`, with `w` from the step's dense
        output (the solver's interpolation of its stages)."""
        fractions, gauss_weights = gauss_legendre(self.quadrature_nodes)
        fractions = jnp.asarray(fractions, jnp.result_type(t))
        gauss_weights = jnp.asarray(gauss_weights, self.dtype)
        increments = jtu.tree_map(lambda K: h * K, ks)
        interpolation = self.options.solver.interpolation_cls(
            t0=t, t1=t + h, y0=w, y1=w_next, k=increments
        )

        def qdot(fraction):
            s = t + fraction * h
            return self._adjoint_rates(polynomial, s, interpolation.evaluate(s))[1]

        values = jax.vmap(qdot)(fractions)
        return jtu.tree_map(
            lambda v: (h * jnp.tensordot(gauss_weights, v, axes=1)).astype(v.dtype),
            values,
        )

    def attempt(self, polynomial, t, w, first, h):
        """One Runge–Kutta step of `(w, q)` from `t` by `h < 0`, `first` the first
        stage's `rates`: `w` there, its error estimate, the increment of `q` and
        the last stage. The stages are a `lax.scan` (compiled once, not once per
        stage), which every differentiation mode allows."""
        a, b = self.a, self.b
        c = jnp.asarray(self.butcher.c, jnp.result_type(t))
        wdot, qdot = first
        ks = jtu.tree_map(
            lambda f: jnp.zeros((self.butcher.count,) + f.shape, f.dtype).at[0].set(f),
            wdot,
        )
        # `q` keeps the parameters' dtypes, whatever the times' (float32 parameters
        # of a float64 solve).
        increment = jtu.tree_map(lambda v: (h * b[0] * v).astype(v.dtype), qdot)

        def stage(carry, j):
            ks, increment, _ = carry
            y = jtu.tree_map(lambda w, K: w + h * jnp.tensordot(a[j], K, axes=1), w, ks)
            kj, qj = self.rates(polynomial, t + c[j] * h, y)
            ks = jtu.tree_map(lambda K, v: K.at[j].set(v), ks, kj)
            increment = jtu.tree_map(
                lambda acc, v: acc + (h * b[j] * v).astype(acc.dtype), increment, qj
            )
            return (ks, increment, qj), None

        (ks, increment, q_last), _ = jax.lax.scan(
            stage, (ks, increment, qdot), jnp.arange(1, self.butcher.count)
        )
        w_next = jtu.tree_map(lambda w, d: w + h * d, w, self._weighted(b, ks))
        error = jtu.tree_map(lambda d: h * d, self._weighted(self.b_error, ks))
        if self.quadrature_nodes:
            increment = self._quadrature(polynomial, t, h, w, w_next, ks)
        last_stage = (jtu.tree_map(lambda K: K[-1], ks), q_last)
        return w_next, error, increment, last_stage

    def control(self, t, t_next, w, w_next, error, pid, slack: float = 1.0):
        """diffrax's `PIDController.adapt_step_size` on the step from `t` to
        `t_next` (backwards), its error estimate divided by `slack`: whether to keep
        it, the next step's size and the controller's state."""
        scaled = jtu.tree_map(lambda e: e / slack, error)
        keep, tau0, tau1, _, pid, _ = self.controller.adapt_step_size(
            -t, -t_next, w, w_next, None, scaled, self.error_order, pid
        )
        return keep, tau1 - tau0, pid

    def init_control(self, t_start, t_end, w, dt):
        """The controller's state for a backward pass from `t_end` to `t_start`
        whose first step is `dt` long."""
        return self.controller.init(
            None, -t_end, -t_start, w, dt, None, None, self.error_order
        )[1]
