"""Solvers diffrax lacks, on its public solver interface: a BDF for stiff problems,
and the one-step root finder of the linear adjoint's implicit stages."""

from ._affine_root import AffineRootFinder as AffineRootFinder
from ._bdf import (
    BDF as BDF,
    BDFInterpolation as BDFInterpolation,
    BDFStepSize as BDFStepSize,
)
from ._preconditioner import applied as applied
