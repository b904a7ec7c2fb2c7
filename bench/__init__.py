"""`make bench`: stock MMS workers against pre-forked ones, side by side (see bench/run.py)."""
