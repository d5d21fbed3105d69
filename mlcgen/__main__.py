"""`python -m mlcgen ...`: the same commands as the `mlcgen` console script."""

from .cli import main

main(prog_name="mlcgen")
