"""SHA-1 and SHA-512 of a file may be NULL until they are computed from the stored object (after the upload
answered, before the file is published).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.alter_column("sha1", existing_type=sa.String(40), nullable=True)
        batch.alter_column("sha512", existing_type=sa.String(128), nullable=True)


def downgrade() -> None:
    # Only a database whose every file has all four digests goes back (complete them first).
    with op.batch_alter_table("files") as batch:
        batch.alter_column("sha1", existing_type=sa.String(40), nullable=False)
        batch.alter_column("sha512", existing_type=sa.String(128), nullable=False)
