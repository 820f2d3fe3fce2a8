"""``python -m modelguard`` is the same as the ``modelguard`` command."""

from modelguard.cli.main import main

if __name__ == "__main__":
    main()
