"""`python -m simulator` is the `ehrsim` command."""

from simulator.cli import main

main()
