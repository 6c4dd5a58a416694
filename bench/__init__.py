"""`make bench`: run as `python -m bench.run` from the repository root."""
