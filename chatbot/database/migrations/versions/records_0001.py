"""LangChain's record manager (``SQLRecordManager``): which chunk keys are indexed, by file.

The same table, columns and indexes as ``langchain_classic.indexes._sql_record_manager``, so its
``create_schema`` finds nothing to do; a records.sqlite made before migrations is kept as it is.

Revision ID: records_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "records_0001"
down_revision = None
branch_labels = ("records",)
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("upsertion_record"):
        return
    op.create_table(
        "upsertion_record",
        sa.Column("uuid", sa.String(), primary_key=True, nullable=False, index=True),
        sa.Column("key", sa.String(), index=True),
        sa.Column("namespace", sa.String(), nullable=False, index=True),
        sa.Column("group_id", sa.String(), nullable=True, index=True),
        sa.Column("updated_at", sa.Float(), index=True),
        sa.UniqueConstraint("key", "namespace", name="uix_key_namespace"),
        sa.Index("ix_key_namespace", "key", "namespace"),
    )


def downgrade() -> None:
    op.drop_table("upsertion_record")
