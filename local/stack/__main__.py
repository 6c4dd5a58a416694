"""Entry point of `python -m local.stack`. Kept import-free at module level: spawned workers import
the parent's __main__ module again, and must not pay for moto and boto3."""

if __name__ == "__main__":
    import sys

    from local.stack.cli import main

    sys.exit(main())
