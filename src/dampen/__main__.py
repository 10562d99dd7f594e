"""``python -m dampen``: the command line."""

from dampen.cli import main

if __name__ == "__main__":
    main()
