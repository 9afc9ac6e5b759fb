"""`python -m virsim`: the same as the `virsim` command."""

from virsim.cli.app import main

main()
