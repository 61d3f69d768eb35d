"""Each example runs in its quick mode and does what it says."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_problem_gradient_checks_and_loss_decreases(tmp_path):
    worst_gap, losses = load("seed_problem").main(steps=20, out=tmp_path)
    assert worst_gap < 1e-5
    assert losses[-1] < 0.5 * losses[0]
    assert (tmp_path / "seed_problem.png").stat().st_size > 10_000


def run_example(name, tmp_path):
    """Run `examples/<name>.py --quick --out tmp_path` as a user would, check that it
    succeeded and wrote `<name>.png`; its output."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", "--out", tmp_path],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    return result.stdout


def assert_loss_at_least_halved(output):
    first, last = map(float, re.search(r"loss (\S+) -> (\S+)", output).groups())
    assert last < 0.5 * first


def test_lynx_hare_fit_lowers_the_loss_and_writes_its_figure(tmp_path):
    output = run_example("lynx_hare", tmp_path)
    assert_loss_at_least_halved(output)


def test_robertson_stiff_checks_its_gradient_and_fits(tmp_path):
    output = run_example("robertson_stiff", tmp_path)
    worst = float(re.search(r"worst: .* at (\S+)", output).group(1))
    assert worst < 1e-3
    assert_loss_at_least_halved(output)


def test_robertson_stiff_dae_form_gives_the_ode_observations():
    """`--dae` fits the DAE form (M = diag(1, 1, 0)); its observations equal the
    ODE's to the solves' accuracy: the forms take different steps, and y2 ≈ 3e-5 in
    the early transient is held to atol 1e-9 only (observed 1.8e-4 relative there,
    1e-9 elsewhere; asserted 1e-3, a tenth of the data's 1% noise)."""
    robertson = load("robertson_stiff")
    observe = jax.jit(robertson.observe, static_argnames="form")
    dae = observe(robertson.TRUE_LOG_K, form="dae")
    ode = observe(robertson.TRUE_LOG_K, form="ode")
    assert jnp.max(jnp.abs(dae - ode) / jnp.max(jnp.abs(ode), axis=0)) < 1e-3


def test_neural_ode_spiral_trains_and_writes_its_figure(tmp_path):
    output = run_example("neural_ode_spiral", tmp_path)
    assert_loss_at_least_halved(output)


def test_inverted_pendulum_lowers_the_cost_and_writes_its_figure(tmp_path):
    output = run_example("inverted_pendulum", tmp_path)
    assert_loss_at_least_halved(output)


def test_lynx_hare_newton_beats_adam_and_writes_its_figure(tmp_path):
    output = run_example("lynx_hare_newton", tmp_path)
    pattern = r"loss (\S+) -> (\S+) after \d+ Newton-CG steps \(Adam: (\S+) after"
    first, newton, adam = map(float, re.search(pattern, output).groups())
    assert newton < 0.5 * first
    assert newton < adam
    assert "beta" in output


def test_lynx_hare_least_squares_fits_with_default_options(tmp_path):
    """Both optimistix solvers, default options (forward-mode Jacobians), reach the
    same least-squares fit."""
    output = run_example("lynx_hare_least_squares", tmp_path)
    fits = re.findall(r"(\S+): loss (\S+) -> (\S+) in", output)
    assert [name for name, _, _ in fits] == ["Levenberg–Marquardt", "Gauss–Newton"]
    (_, first, levenberg), (_, _, gauss) = fits
    assert float(levenberg) < 0.5 * float(first)
    assert float(gauss) == pytest.approx(float(levenberg), rel=1e-2)


def test_sharded_ensemble_fits_on_simulated_devices(tmp_path):
    output = run_example("sharded_ensemble", tmp_path)
    assert "on 8 cpu devices" in output
    assert "sharded as P('sites',)" in output
    assert_loss_at_least_halved(output)


def test_theophylline_dosing_fits_the_curve_and_lowers_the_loss(tmp_path):
    """The fit follows the measured curve (rms misfit under 1 mg/L, a tenth of its
    peak; observed 0.68), and Adam through the dose events lowers the loss."""
    output = run_example("theophylline_dosing", tmp_path)
    assert float(re.search(r"rms misfit (\S+) mg/L", output).group(1)) < 1.0
    assert_loss_at_least_halved(output)
