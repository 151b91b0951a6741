"""`python -m odradek.cli` runs the `odradek` command."""

from odradek.cli.main import main

main()
