"""Side-by-side benchmarks: underlay against the raw drivers, SQLAlchemy and advanced-alchemy.

Not part of the package or the test run. ``make bench`` builds a separate environment and runs
``python -m benchmarks``; see ``docs/performance.md``.
"""
