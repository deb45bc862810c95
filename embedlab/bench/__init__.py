"""The product's job runner, results store and report.

Not to be confused with the top-level ``bench/`` folder, which holds speed and memory benchmark scripts.
"""
