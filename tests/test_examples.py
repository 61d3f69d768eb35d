"""Each example runs in its quick mode and does what it says."""

import importlib.util
import pathlib

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_problem_gradient_checks_and_loss_decreases():
    worst_gap, losses = load("seed_problem").main(steps=20)
    assert worst_gap < 1e-5
    assert losses[-1] < 0.5 * losses[0]
