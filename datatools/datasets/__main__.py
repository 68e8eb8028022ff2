"""`python -m datatools.datasets`: the registered dataset names, one per line (what the
Makefile's dataset targets are made from; needs nothing beyond the standard library)."""

from . import names

print("\n".join(names()))
