"""`python -m corral.operator`: the same as `corral operator`."""

from corral.operator.command import operator

operator()
