"""Conversations, their answers (turns) and feedback on answers.

A chats.sqlite made before migrations (schema version 1, the same tables) is kept as it is.

Revision ID: chats_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "chats_0001"
down_revision = None
branch_labels = ("chats",)
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY numbers rows itself


def upgrade() -> None:
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "conversations" not in tables:
        op.create_table(
            "conversations",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("owner", sa.String(200), nullable=False, index=True),
            sa.Column("title", sa.String(480), nullable=False),
            sa.Column("channel", sa.String(8), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False, index=True),
        )
    if "turns" not in tables:
        op.create_table(
            "turns",
            sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
            sa.Column(
                "conversation_id",
                sa.String(32),
                sa.ForeignKey("conversations.id", ondelete="CASCADE"),
                nullable=False,
                index=True,
            ),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("question", sa.Text(), nullable=False),
            sa.Column("answer", sa.Text(), nullable=False),
            sa.Column("adapter", sa.String(200), nullable=False, index=True),
            sa.Column("record", sa.Text(), nullable=False),
            sa.Column("created_at", sa.Float(), nullable=False),
        )
    if "feedback" not in tables:
        op.create_table(
            "feedback",
            sa.Column("turn_id", ROW_ID, sa.ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("verdict", sa.Integer(), nullable=False),
            sa.Column("correction", sa.Text(), nullable=True),
            sa.Column("wrong_sources", sa.Text(), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False, index=True),
        )


def downgrade() -> None:
    for table in ("feedback", "turns", "conversations"):
        op.drop_table(table)
