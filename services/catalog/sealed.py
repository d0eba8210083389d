"""The catalog's secrets at rest (S3 secret keys, webhook secrets): one SecretBox per service,
shared with the write path through `session.info[SECRETS]` (see session_factory)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import ExtractError
from servicekit.security.secretbox import SecretBox

__all__ = ["SECRETS", "secret_box"]

SECRETS = "catalog.secrets"


def secret_box(session: AsyncSession) -> SecretBox:
    box = session.info.get(SECRETS)
    if box is None:
        raise ExtractError(f"server misconfigured: no SecretBox in session.info[{SECRETS!r}]")
    return box
