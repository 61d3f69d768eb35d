"""Numerics shared by the forward and backward passes: the forward solution's dense
output at any time, Runge–Kutta stages, quadrature rules, and loops over batches of
items."""

from . import _dense_output as dense_output  # noqa: F401
from ._batches import over_batches as over_batches
from ._butcher import Stages as Stages
from ._quadrature_rules import gauss_legendre as gauss_legendre
