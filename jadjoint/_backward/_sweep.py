"""The backward sweep: the storage's segments integrated from `T` back to `t0`, one
loop iteration each, by the backward integrator, the step size carried from one to
the next."""

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PyTree

from .._differentiation_mode import loop_kind
from .._forward import AbstractStorage, Forward, Segments
from .._options import Options
from ._diffrax_solves import next_step_guess
from ._integrator import AbstractBackwardIntegrator
from ._system import AdjointSystem


def backward_sweep(
    storage: AbstractStorage,
    integrator: AbstractBackwardIntegrator,
    *,
    system: AdjointSystem,
    forward: Forward,
    segments: Segments,
    dt_guess,
    options: Options,
) -> tuple[PyTree, PyTree]:
    """`(w(t0), q(t0))` from `w(T⁺) = 0`, `q(T) = 0`, integrating each of the
    `segments.count` batched `segments` (`t0` to `T` in order), last first, with
    `integrator`, over the forward solution that `storage` gives for each. Over
    thinned storage (`segments.spans`) a row stands for several forward segments,
    which `storage.span_segments` recovers before they are integrated in turn. The
    loops' trip counts are traced (the forward solve's own segments); their kind
    follows the differentiation mode, as in `_numerics/_batches.py`.

    The progress meter reports the rows done; the solves inside them report nothing
    (one bar per backward pass, not one per segment)."""
    v = jtu.tree_map(lambda a: jnp.zeros_like(a[0]), segments.x_right)
    q = jtu.tree_map(jnp.zeros_like, system.diff)
    meter = options.progress_meter
    options = eqx.tree_at(
        lambda o: o.progress_meter, options, diffrax.NoProgressMeter()
    )
    t_end = segments.t_right[segments.count - 1]
    span = t_end - segments.t_left[0]
    span = jnp.where(span > 0, span, 1)
    kind = loop_kind()

    bound = system.bound()

    def integrate(segment, v, q, dt):
        dense = storage.dense(bound, forward, segment, options)
        v, q, steps = integrator.integrate(
            system, segment, dense, w=v, q=q, dt0=dt, options=options
        )
        return v, q, next_step_guess(dt, segment.t_right - segment.t_left, steps)

    def integrate_all(segments, v, q, dt):
        def step(carry):
            r, v, q, dt = carry
            # Under `vmap` a member that has finished (`r = −1`) runs on, its
            # updates discarded: it retakes its first segment, not a row past the
            # end, which may not be one the forward solve took.
            return r - 1, *integrate(segments.row(jnp.maximum(r, 0)), v, q, dt)

        _, v, q, dt = eqxi.while_loop(
            lambda carry: carry[0] >= 0,
            step,
            (segments.count - 1, v, q, dt),
            max_steps=segments.t_left.shape[0],
            kind=kind,
        )
        return v, q, dt

    def step(carry):
        r, v, q, dt, meter_state = carry
        if segments.spans:
            row = segments.row(jnp.maximum(r, 0))  # as in `integrate_all`
            inner = storage.span_segments(bound, row, options)
            v, q, dt = integrate_all(inner, v, q, dt)
        else:
            row = segments.row(r)
            v, q, dt = integrate(row, v, q, dt)
        progress = jnp.clip((t_end - row.t_left) / span, 0, 1)
        return r - 1, v, q, dt, meter.step(meter_state, progress)

    _, v, q, _, meter_state = eqxi.while_loop(
        lambda carry: carry[0] >= 0,
        step,
        (segments.count - 1, v, q, dt_guess, meter.init()),
        max_steps=segments.t_left.shape[0],
        kind=kind,
    )
    meter.close(meter_state)
    return integrator.w_at_start(v), q
