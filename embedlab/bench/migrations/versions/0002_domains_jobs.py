"""Results for more than one domain, tied to the jobs that made them; the jobs table (the runner's source of truth).

results: + domain (existing rows: "text", the only domain before), experiment, job_id, seed, config (JSON) and
config_hash, status (existing rows: "ok"). jobs: one row per job (kind + model + data + config + seed), with its
state, attempts, heartbeat, progress, log tail, timings and the run ids of its results.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("domain", sa.String(32), nullable=False, server_default="text"))
        batch.add_column(sa.Column("experiment", sa.String(256)))
        batch.add_column(sa.Column("job_id", sa.String(32)))
        batch.add_column(sa.Column("seed", sa.Integer))
        batch.add_column(sa.Column("config", sa.JSON))
        batch.add_column(sa.Column("config_hash", sa.String(64)))
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="ok"))
    for column in ("domain", "experiment", "job_id", "config_hash"):
        op.create_index(f"ix_results_{column}", "results", [column])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("domain", sa.String(32), nullable=False),
        sa.Column("experiment", sa.String(256)),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="2"),
        sa.Column("threads", sa.Integer, nullable=False, server_default="1"),
        sa.Column("resources", sa.JSON),
        sa.Column("output_dir", sa.String(1024)),
        sa.Column("executor", sa.String(32)),
        sa.Column("worker", sa.String(256)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("progress", sa.Float),
        sa.Column("progress_text", sa.String(512)),
        sa.Column("log_tail", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("result_run_ids", sa.JSON),
        sa.Column("timings", sa.JSON),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("heartbeat_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.UniqueConstraint("config_hash", "seed", name="uq_jobs_config_seed"),
    )
    for column in ("status", "experiment", "created_at"):
        op.create_index(f"ix_jobs_{column}", "jobs", [column])


def downgrade() -> None:
    op.drop_table("jobs")
    for column in ("domain", "experiment", "job_id", "config_hash"):
        op.drop_index(f"ix_results_{column}", "results")
    with op.batch_alter_table("results") as batch:
        for column in ("status", "config_hash", "config", "seed", "job_id", "experiment", "domain"):
            batch.drop_column(column)
