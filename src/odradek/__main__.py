"""`python -m odradek` runs the `odradek` command (as `python -m odradek.cli` does)."""

from odradek.cli.main import main

main()
