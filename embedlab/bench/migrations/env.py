"""Alembic environment for the results store: always run programmatically with a connection handed in through
``config.attributes["connection"]`` (see ``embedlab.bench.store.migrate``); no alembic.ini, no URL in a file."""
from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things in place; batch mode copies the table where needed.
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
