"""`python -m mlcgen ...`: the same commands as the `mlcgen` console script."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="mlcgen")
