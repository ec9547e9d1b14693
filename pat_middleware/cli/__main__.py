"""``python -m pat_middleware.cli``: the ``pat`` command."""

from pat_middleware.cli import main

if __name__ == "__main__":
    main()
