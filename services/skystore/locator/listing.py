"""ListObjects V1/V2 over ready versions: prefix, delimiter roll-up, markers, UTF-8 byte order."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.skystore.locator.buckets import ready_bucket_id
from services.skystore.schemas import ListedObject, ListPage
from services.skystore.states import State
from services.skystore.tables import objects

__all__ = ["list_objects"]

MAX_KEYS = 1000
_BATCH = 1000
# What a listing answers with: no metadata or checksum to decode per row.
_LISTED = (
    objects.c.key,
    objects.c.size,
    objects.c.etag,
    objects.c.last_modified,
    objects.c.owner,
)


def _after_prefix(prefix: str) -> str:
    """The smallest string greater than every string that starts with `prefix`."""
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates are not characters; none sorts between
        last = 0xE000
    if last > 0x10FFFF:
        return prefix + "\U0010ffff"  # never reached by real keys: one level up would be exact
    return prefix[:-1] + chr(last)


async def list_objects(
    session: AsyncSession,
    *,
    bucket: str,
    prefix: str = "",
    delimiter: str = "",
    marker: str = "",
    max_keys: int = MAX_KEYS,
) -> ListPage:
    """Keys after `marker` (exclusive) under `prefix`, with CommonPrefixes rolled up at
    `delimiter`; `next_marker` resumes the listing (a key, or a common prefix to skip)."""
    bucket_id = await ready_bucket_id(session, bucket)
    max_keys = max(0, min(max_keys, MAX_KEYS))
    contents: list[ListedObject] = []
    common: list[str] = []
    lower, inclusive = marker, False
    if delimiter and marker.startswith(prefix) and marker.endswith(delimiter):
        rest = marker[len(prefix) :]
        if rest.find(delimiter) == len(rest) - len(delimiter):
            lower, inclusive = _after_prefix(marker), True  # a common prefix: skip all under it
    if prefix and prefix > lower:
        lower, inclusive = prefix, True
    # Keys under the prefix sort before this bound: no row past the prefix is fetched.
    upper = [objects.c.key < _after_prefix(prefix)] if prefix else []
    last = ""
    while len(contents) + len(common) <= max_keys:
        bound = objects.c.key >= lower if inclusive else objects.c.key > lower
        # Without a delimiter every row is an entry: one more than the page needs is enough.
        wanted = _BATCH if delimiter else max_keys - len(contents) - len(common) + 1
        query = (
            sa.select(*_LISTED)
            .where(objects.c.bucket_id == bucket_id, objects.c.status == State.READY, bound, *upper)
            .order_by(objects.c.key)
            .limit(wanted)
        )
        rows = (await session.execute(query)).all()
        if not rows:
            break
        jumped = False
        for row in rows:
            key: str = row.key
            if not key.startswith(prefix):
                return ListPage(
                    contents=contents, common_prefixes=common, is_truncated=False, next_marker=None
                )
            if len(contents) + len(common) == max_keys:
                return ListPage(
                    contents=contents,
                    common_prefixes=common,
                    is_truncated=True,
                    next_marker=last or None,
                )
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                rolled = key[: cut + len(delimiter)]
                common.append(rolled)
                last = rolled
                lower, inclusive, jumped = _after_prefix(rolled), True, True
                break
            contents.append(
                ListedObject(
                    key=key,
                    size=row.size,
                    etag=row.etag,
                    last_modified=row.last_modified,
                    owner=row.owner,
                )
            )
            last = key
        if not jumped:
            if len(rows) < wanted:
                break
            lower, inclusive = rows[-1].key, False
    return ListPage(contents=contents, common_prefixes=common, is_truncated=False, next_marker=None)
