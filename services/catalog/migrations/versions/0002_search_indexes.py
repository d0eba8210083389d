"""catalog search indexes: full text, hot-field columns, geo bounding boxes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

- Full text: on PostgreSQL the function `catalog_tsvector(jsonb)` (a string, or the strings of
  an array, as `simple` tokens) and GIN indexes over it for `name` and `description`; on SQLite
  `catalog_text` (one row per string value of every document) and its FTS5 index
  `catalog_text_fts`, kept in step by triggers.
- Hot fields: generated columns `hot_<attribute>_n` / `hot_<attribute>_s` (the attribute's
  value when a JSON number / string) for the attributes filters and `orderby` hit most, with
  btree indexes in the order searches sort by.
- Geo: the bounding box of `geometry` and `location`, written by put_resource, indexed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from servicekit.db import JSONDocument
from services.catalog.fulltext import strings
from services.catalog.geo import as_geometry

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "catalog_resources"

# As in services/catalog/tables.py at this revision.
HOT_ATTRIBUTES = {
    "timestamp": "timestamp",
    "created": "created",
    "updated": "updated",
    "name": "name",
    "bytes": "bytes",
    "infrastructure-service": "infrastructure_service",
    "state": "state",
    "resource:object": "resource_object",
}
HOT_DESCENDING = ("timestamp", "created", "updated", "name", "bytes")
SIDES = ("west", "south", "east", "north")
GEO_COLUMNS = [f"{attribute}_{side}" for attribute in ("geometry", "location") for side in SIDES]

TSVECTOR = """
CREATE FUNCTION catalog_tsvector(value jsonb) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT to_tsvector('simple'::regconfig, regexp_replace(
    CASE jsonb_typeof(value)
      WHEN 'string' THEN value #>> '{}'
      WHEN 'array' THEN coalesce((
        SELECT string_agg(element #>> '{}', ' ') FROM jsonb_array_elements(value) AS element
        WHERE jsonb_typeof(element) = 'string'), '')
      ELSE '' END,
    '[^[:alnum:]]+', ' ', 'g'))
$$
"""

SQLITE_TEXT = [
    """CREATE TABLE catalog_text (
        entry INTEGER PRIMARY KEY,
        resource_id TEXT NOT NULL,
        path TEXT NOT NULL,
        text TEXT NOT NULL)""",
    "CREATE INDEX ix_catalog_text_resource_id ON catalog_text (resource_id)",
    """CREATE VIRTUAL TABLE catalog_text_fts USING fts5(
        text, content='catalog_text', content_rowid='entry',
        tokenize='unicode61 remove_diacritics 0')""",
    """CREATE TRIGGER catalog_text_added AFTER INSERT ON catalog_text BEGIN
        INSERT INTO catalog_text_fts (rowid, text) VALUES (new.entry, new.text);
    END""",
    """CREATE TRIGGER catalog_text_removed AFTER DELETE ON catalog_text BEGIN
        INSERT INTO catalog_text_fts (catalog_text_fts, rowid, text)
        VALUES ('delete', old.entry, old.text);
    END""",
]


def _hot_expressions(dialect: str, attribute: str) -> tuple[str, str]:
    """SQL of the number and the string value of a top-level attribute."""
    if dialect == "postgresql":
        value = f"(document -> '{attribute}')"
        return (
            f"CASE WHEN jsonb_typeof({value}) = 'number' "
            f"THEN CAST(document ->> '{attribute}' AS DOUBLE PRECISION) END",
            f"CASE WHEN jsonb_typeof({value}) = 'string' THEN document ->> '{attribute}' END",
        )
    path = f"'$.\"{attribute}\"'"
    return (
        f"CASE WHEN json_type(document, {path}) IN ('integer', 'real') "
        f"THEN json_extract(document, {path}) END",
        f"CASE WHEN json_type(document, {path}) = 'text' THEN json_extract(document, {path}) END",
    )


def _is_array(dialect: str, attribute: str) -> str:
    if dialect == "postgresql":
        return f"jsonb_typeof(document -> '{attribute}') = 'array'"
    return f"json_type(document, '$.\"{attribute}\"') = 'array'"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    postgres = dialect == "postgresql"
    kind = "STORED" if postgres else "VIRTUAL"
    for attribute, slug in HOT_ATTRIBUTES.items():
        number, string = _hot_expressions(dialect, attribute)
        text_type = 'TEXT COLLATE "C"' if postgres else "TEXT"
        op.execute(
            f"ALTER TABLE {TABLE} ADD COLUMN hot_{slug}_n DOUBLE PRECISION "
            f"GENERATED ALWAYS AS ({number}) {kind}"
        )
        op.execute(
            f"ALTER TABLE {TABLE} ADD COLUMN hot_{slug}_s {text_type} "
            f"GENERATED ALWAYS AS ({string}) {kind}"
        )
        n, s = f"hot_{slug}_n", f"hot_{slug}_s"
        op.execute(f"CREATE INDEX ix_{TABLE}_hot_{slug} ON {TABLE} (collection, {n}, {s}, id)")
        if not postgres:
            op.execute(f"CREATE INDEX ix_{TABLE}_{s} ON {TABLE} (collection, {s})")
        elif attribute in HOT_DESCENDING:
            op.execute(
                f"CREATE INDEX ix_{TABLE}_hot_{slug}_desc ON {TABLE} "
                f"(collection, {n} DESC NULLS LAST, {s} DESC NULLS LAST, id)"
            )
    arrays = " OR ".join(_is_array(dialect, attribute) for attribute in HOT_ATTRIBUTES)
    boolean = "BOOLEAN" if postgres else "INTEGER"
    op.execute(
        f"ALTER TABLE {TABLE} ADD COLUMN hot_arrays {boolean} NOT NULL "
        f"GENERATED ALWAYS AS (coalesce({arrays}, false)) {kind}"
    )
    op.execute(f"CREATE INDEX ix_{TABLE}_hot_arrays ON {TABLE} (collection) WHERE hot_arrays")
    for column in GEO_COLUMNS:
        op.add_column(TABLE, sa.Column(column, sa.Float(), nullable=True))
    for attribute in ("geometry", "location"):
        west, south, east, north = (f"{attribute}_{side}" for side in SIDES)
        if postgres:  # a GiST index over the box: overlap, containment in two dimensions
            op.execute(
                f"CREATE INDEX ix_{TABLE}_{attribute}_bbox ON {TABLE} USING gist "
                f"(box(point({west}, {south}), point({east}, {north})))"
            )
        else:
            op.execute(f"CREATE INDEX ix_{TABLE}_{attribute}_bbox ON {TABLE} (collection, {west})")
    if postgres:
        op.execute(TSVECTOR)
        for attribute in ("name", "description"):
            op.execute(
                f"CREATE INDEX ix_{TABLE}_{attribute}_text ON {TABLE} "
                f"USING gin (catalog_tsvector(document -> '{attribute}'))"
            )
    else:
        for statement in SQLITE_TEXT:
            op.execute(statement)
    _backfill(op.get_bind(), postgres)


def _backfill(bind: sa.Connection, postgres: bool) -> None:
    """Bounding boxes (and, on SQLite, the strings) of the resources stored before 0002."""
    table = sa.table(
        TABLE,
        sa.column("id", sa.Text()),
        sa.column("document", JSONDocument),
        *(sa.column(column, sa.Float()) for column in GEO_COLUMNS),
    )
    text = sa.table("catalog_text", sa.column("resource_id"), sa.column("path"), sa.column("text"))
    last = ""
    while True:
        rows = bind.execute(
            sa.select(table.c.id, table.c.document)
            .where(table.c.id > last)
            .order_by(table.c.id)
            .limit(1_000)
        ).all()
        if not rows:
            return
        for resource_id, document in rows:
            boxes = {}
            for attribute in ("geometry", "location"):
                geometry = as_geometry(document.get(attribute))
                if geometry is not None:
                    boxes |= dict(
                        zip((f"{attribute}_{s}" for s in SIDES), geometry.bounds, strict=True)
                    )
            if boxes:
                bind.execute(sa.update(table).where(table.c.id == resource_id).values(**boxes))
            texts = [
                {"resource_id": resource_id, "path": path, "text": value}
                for path, value in strings(document)
            ]
            if texts and not postgres:
                bind.execute(sa.insert(text), texts)
        last = rows[-1][0]


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for attribute in ("name", "description"):
            op.execute(f"DROP INDEX ix_{TABLE}_{attribute}_text")
        op.execute("DROP FUNCTION catalog_tsvector(jsonb)")
    else:
        op.execute("DROP TABLE catalog_text_fts")
        op.execute("DROP TABLE catalog_text")
    for attribute in ("geometry", "location"):
        op.execute(f"DROP INDEX ix_{TABLE}_{attribute}_bbox")
    op.execute(f"DROP INDEX ix_{TABLE}_hot_arrays")
    columns = [*GEO_COLUMNS, "hot_arrays"]
    for slug in HOT_ATTRIBUTES.values():
        for suffix in ("", "_s", "_desc"):
            op.execute(f"DROP INDEX IF EXISTS ix_{TABLE}_hot_{slug}{suffix}")
        columns += [f"hot_{slug}_n", f"hot_{slug}_s"]
    for column in columns:
        op.execute(f"ALTER TABLE {TABLE} DROP COLUMN {column}")
