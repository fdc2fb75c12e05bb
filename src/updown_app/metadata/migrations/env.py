"""Alembic environment: runs on the connection handed over by ``updown_app.metadata.db.migrate``."""

from __future__ import annotations

from alembic import context

from updown_app.metadata.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `updown db upgrade` (it supplies the database connection)")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
