"""Benchmarks for callqueue: ``python -m bench.run`` (see ``bench/run.py``)."""
