"""``python -m skmoe``: the same as the ``skmoe`` console script."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
