"""Benchmarks for terra: ``python -m benchmarks`` runs every ``bench_*`` module.

Each module exposes ``run(report)`` (optionally ``run(report, quick=False)``)
and calls ``report(title, columns, rows)`` once per table it measures. Timing
helpers shared by the modules live in :mod:`benchmarks._report`.
"""
