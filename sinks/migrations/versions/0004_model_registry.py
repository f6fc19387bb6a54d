"""model registry and rollouts: the files ``fleetsight model publish`` keeps and who should run them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, comment="architecture, as the edge knows it"),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("input_shape", sa.String(64), nullable=False, comment="e.g. 1x3x416x416"),
        sa.Column("classes", sa.Integer, nullable=False, comment="number of classes the model outputs"),
        sa.Column("notes", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("content", sa.LargeBinary, nullable=False, comment="the ONNX file"),
        comment="Models that can be rolled out to edges.",
    )
    op.create_table(
        "model_rollouts",
        sa.Column("rollout_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("version", sa.String(64), sa.ForeignKey("model_versions.version"), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        comment="Rollout instructions (fleetsight model rollout); the latest one addressed to a camera or its site wins.",
    )
    op.create_table(
        "model_rollout_targets",
        sa.Column("rollout_id", sa.BigInteger, sa.ForeignKey("model_rollouts.rollout_id"), primary_key=True),
        sa.Column("target_kind", sa.String(8), primary_key=True, comment="site or camera"),
        sa.Column("target", sa.String(64), primary_key=True, comment="the site or camera id"),
        comment="The sites and cameras a rollout addressed.",
    )
    op.execute("GRANT SELECT ON model_versions, model_rollouts, model_rollout_targets TO fleetsight_analyst")


def downgrade() -> None:
    op.drop_table("model_rollout_targets")
    op.drop_table("model_rollouts")
    op.drop_table("model_versions")
