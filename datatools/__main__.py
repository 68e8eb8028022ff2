"""`python -m datatools` runs the `datatools` command."""

from .cli import main

main()
