"""registry tables: base models and checkpoints

Revision ID: 0001
Revises:
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
        "base_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.String(length=255), nullable=False),
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("architecture", sa.String(length=128), nullable=True),
        sa.Column("config_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("tokenizer_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("tensor_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "repo_id", "revision", name="uq_base_models_source_repo_rev"),
    )
    op.create_index(op.f("ix_base_models_repo_id"), "base_models", ["repo_id"], unique=False)
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("base_id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.String(length=255), nullable=False),
        sa.Column("revision", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reason_code", sa.String(length=32), nullable=True),
        sa.Column("architecture", sa.String(length=128), nullable=True),
        sa.Column("model_type", sa.String(length=64), nullable=True),
        sa.Column("config_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("tokenizer_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("tensor_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("lineage_distance", sa.Float(), nullable=True),
        sa.Column("weights_verified", sa.Boolean(), nullable=False),
        sa.Column("card_base_model", sa.JSON(), nullable=True),
        sa.Column("card_datasets", sa.JSON(), nullable=True),
        sa.Column("card_license", sa.String(length=128), nullable=True),
        sa.Column("card_tags", sa.JSON(), nullable=True),
        sa.Column("downloads", sa.BigInteger(), nullable=True),
        sa.Column("likes", sa.Integer(), nullable=True),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["base_id"], ["base_models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("base_id", "source", "repo_id", name="uq_checkpoints_base_source_repo"),
    )
    op.create_index(op.f("ix_checkpoints_base_id"), "checkpoints", ["base_id"], unique=False)
    op.create_index(op.f("ix_checkpoints_reason_code"), "checkpoints", ["reason_code"], unique=False)
    op.create_index(op.f("ix_checkpoints_repo_id"), "checkpoints", ["repo_id"], unique=False)
    op.create_index(op.f("ix_checkpoints_status"), "checkpoints", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_checkpoints_status"), table_name="checkpoints")
    op.drop_index(op.f("ix_checkpoints_repo_id"), table_name="checkpoints")
    op.drop_index(op.f("ix_checkpoints_reason_code"), table_name="checkpoints")
    op.drop_index(op.f("ix_checkpoints_base_id"), table_name="checkpoints")
    op.drop_table("checkpoints")
    op.drop_index(op.f("ix_base_models_repo_id"), table_name="base_models")
    op.drop_table("base_models")
