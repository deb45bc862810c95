"""Alembic migrations of the results store's schema (run by ``embedlab.bench.store``, never by hand-written SQL).

Revisions: 0001 — the single ``results`` table as it stood before the benchmark core (issue 14); 0002 — domain, job,
experiment, seed, config and status columns on ``results`` and the ``jobs`` table.
"""
