"""The benchmark core, domain-neutral: the results store (+ Alembic migrations), jobs and their executors (local,
inline, Ray), job matrix files, leaderboards, reports and paired-bootstrap statistics.

It reaches a domain only through the registries (embedlab.jobkinds, embedlab.results); the speed and memory
scripts are in the top-level ``benchmarks/`` folder.
"""
