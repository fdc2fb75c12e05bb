"""Channels of files, and the signed (TUF) index metadata.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_channels",
        sa.Column("file_id", sa.String(32), sa.ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("channel", sa.String(64), primary_key=True),
    )
    op.create_index("ix_file_channels_channel", "file_channels", ["channel"])
    op.create_table(
        "index_metadata",
        sa.Column("role", sa.String(16), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("index_metadata")
    op.drop_index("ix_file_channels_channel", "file_channels")
    op.drop_table("file_channels")
