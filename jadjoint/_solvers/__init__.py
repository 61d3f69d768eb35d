"""Solvers diffrax lacks, on its public solver interface: a BDF for stiff problems."""

from ._bdf import (
    BDF as BDF,
    BDFInterpolation as BDFInterpolation,
    BDFStepSize as BDFStepSize,
)
