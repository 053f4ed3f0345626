"""``python -m fedattest``: the same command line as the ``fedattest`` console script."""

from fedattest.cli import main

if __name__ == "__main__":
    main()
