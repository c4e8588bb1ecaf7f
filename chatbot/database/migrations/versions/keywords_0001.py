"""The keyword index of the chunks, per collection: SQLite's FTS5, or PostgreSQL's full-text search.

A keywords.sqlite made before migrations held one collection in the FTS5 table ``chunks``: its
rows move here under the collection it belongs to (``collection``, given by the app).

Revision ID: keywords_0001
"""

import sqlalchemy as sa
from alembic import context, op

revision = "keywords_0001"
down_revision = None
branch_labels = ("keywords",)
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE keyword_chunks USING fts5("
            "collection UNINDEXED, id UNINDEXED, text, tokenize='porter unicode61')"
        )
        if sa.inspect(op.get_bind()).has_table("chunks"):
            op.execute(
                sa.text(
                    "INSERT INTO keyword_chunks (collection, id, text) SELECT :collection, id, text FROM chunks"
                ).bindparams(collection=context.config.attributes["collection"])
            )
            op.execute("DROP TABLE chunks")
        return
    op.create_table(
        "keyword_chunks",
        sa.Column("collection", sa.String(200), primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("text", sa.Text(), nullable=False),
    )
    if dialect == "postgresql":
        # English stemming, like FTS5's porter tokenizer; a GIN index answers the OR-of-words queries
        op.execute(
            "ALTER TABLE keyword_chunks ADD COLUMN terms tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED"
        )
        op.execute("CREATE INDEX ix_keyword_chunks_terms ON keyword_chunks USING gin (terms)")


def downgrade() -> None:
    op.drop_table("keyword_chunks")
