"""`python -m datatools` runs the `datatools` command."""

from .cli.app import main

main()
