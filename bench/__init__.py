"""`make bench`: the price of control, measured (see bench/run.py)."""
