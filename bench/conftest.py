"""pytest-benchmark suite: ``python -m pytest bench/ --benchmark-group-by=param:workload``.

Kept out of the default test paths (pyproject's testpaths = tests): these time, they do not
check. Correctness is in tests/.
"""
