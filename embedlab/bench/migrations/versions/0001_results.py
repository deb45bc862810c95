"""The results table as every store written before the benchmark core has it (one row per run, task, metric).

Stores written by that code carry no ``alembic_version`` table; ``embedlab.bench.store.migrate`` recognises them by
this table's columns and stamps them at this revision before upgrading.

Revision ID: 0001
Revises: (none)
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("model_path", sa.String(1024)),
        sa.Column("model_hash", sa.String(128)),
        sa.Column("task", sa.String(256), nullable=False),
        sa.Column("task_type", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(256), nullable=False),
        sa.Column("split", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("embedlab_version", sa.String(64), nullable=False),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("duration_s", sa.Float),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("extra", sa.JSON),
    )
    for column in ("model", "task", "metric", "created_at", "run_id"):
        op.create_index(f"ix_results_{column}", "results", [column])


def downgrade() -> None:
    op.drop_table("results")
