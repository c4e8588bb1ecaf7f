"""What the last sync saw of each file and the sync's notes, per collection; the sync leases.

A manifest.sqlite made before migrations held one collection in ``files`` and ``meta``: its rows
move here under the collection it belongs to (``collection``, given by the app).

Revision ID: manifest_0001
"""

import sqlalchemy as sa
from alembic import context, op

revision = "manifest_0001"
down_revision = None
branch_labels = ("manifest",)
depends_on = None

COLUMNS = "path, sha256, size, pages, chunks, indexed_at, error"


def upgrade() -> None:
    op.create_table(
        "knowledge_files",
        sa.Column("collection", sa.String(200), primary_key=True),
        sa.Column("path", sa.String(4096), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("chunks", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("indexed_at", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_table(
        "knowledge_meta",
        sa.Column("collection", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text(), nullable=True),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    tables = set(sa.inspect(op.get_bind()).get_table_names())
    if "files" in tables and "meta" in tables:
        collection = {"collection": context.config.attributes["collection"]}
        op.execute(
            sa.text(
                f"INSERT INTO knowledge_files (collection, {COLUMNS}) SELECT :collection, {COLUMNS} FROM files"
            ).bindparams(**collection)
        )
        op.execute(
            sa.text(
                "INSERT INTO knowledge_meta (collection, key, value) SELECT :collection, key, value FROM meta"
            ).bindparams(**collection)
        )
        op.drop_table("files")
        op.drop_table("meta")


def downgrade() -> None:
    for table in ("leases", "knowledge_meta", "knowledge_files"):
        op.drop_table(table)
