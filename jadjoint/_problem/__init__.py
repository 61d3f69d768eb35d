"""What is solved: `Problem`, with its running cost `f`, initial condition `g` and
dynamics `h`, one final class per form."""

from ._bound import BoundProblem as BoundProblem
from ._dae import (
    StateSpaceForm as StateSpaceForm,
    consistent_initialisation as consistent_initialisation,
)
from ._dynamics import (
    AbstractDAE as AbstractDAE,
    Solving as Solving,
    closure_converted as closure_converted,
)
from ._problem import Problem as Problem
