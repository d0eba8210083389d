"""Subscriptions: a user's standing interest in a data-set, or in a collection narrowed by a
filter, delivered on NATS (`catalog.subscription.<uuid>`, see events.py) and, for webhook
subscriptions, POSTed to the user's URL signed as Standard Webhooks specifies
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<HMAC-SHA256>`), retried with
exponential backoff by JetStream redelivery until the endpoint answers 2xx.

A subscription reads:

    {"data-set": "data-set/<uuid>"}                       members entering, changing, leaving
    {"collection": "data-record", "filter": "tags='x'"}   matching records (filter optional)
    "delivery": {"kind": "nats"}                            the default
    "delivery": {"kind": "webhook", "url": "https://…", "secret": "whsec_<base64>"}

The secret is moved out of `delivery` into `webhook-secret`, stored encrypted (see sealed.py)
and never shown again. The
subscriber's claims are recorded when the subscription is created (`subscriber-claims`), so
notifications carry only what the subscriber could see, as the subscriber was then.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from servicekit.cloudevents import CloudEvent
from servicekit.errors import InvalidInput, NotFound
from servicekit.security import Identity
from services.catalog import acl
from services.catalog.sealed import secret_box
from services.catalog.tables import catalog_resources
from services.catalog.watchers import WATCHED_FILTERS

__all__ = [
    "CLAIMS_KEY",
    "COLLECTION",
    "SECRET_KEY",
    "WebhookDispatcher",
    "WebhookRefused",
    "check_delivery",
    "prepare_subscription",
]

log = logging.getLogger(__name__)

COLLECTION = "subscription"
SECRET_KEY = "webhook-secret"
CLAIMS_KEY = "subscriber-claims"
_MIN_SECRET_BYTES = 24
_KINDS = ("nats", "webhook")


def _check_secret(secret: Any) -> None:
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise InvalidInput(
            "delivery.secret: expected 'whsec_' followed by base64 of at least "
            f"{_MIN_SECRET_BYTES} random bytes (Standard Webhooks)",
            detail={"field": "delivery.secret"},
        )
    try:
        raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) < _MIN_SECRET_BYTES:
        raise InvalidInput(
            f"delivery.secret: not base64 of at least {_MIN_SECRET_BYTES} bytes",
            detail={"field": "delivery.secret"},
        )


def check_delivery(name: str, value: Any) -> None:
    """The schema check of `delivery` (the secret is checked when it is moved aside)."""
    if not isinstance(value, dict) or value.get("kind") not in _KINDS:
        raise InvalidInput(
            f"{name}: expected an object with kind one of {', '.join(_KINDS)}",
            detail={"field": name},
        )
    if value["kind"] == "webhook":
        url = urlsplit(value.get("url", "")) if isinstance(value.get("url"), str) else None
        if url is None or url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidInput(
                f"{name}.url: expected an absolute http(s) URL", detail={"field": f"{name}.url"}
            )


async def _check_data_set(session: AsyncSession, identity: Identity, data_set: Any) -> None:
    if not isinstance(data_set, str) or not data_set.startswith("data-set/"):
        raise InvalidInput("data-set: expected a data-set id", detail={"field": "data-set"})
    document = (
        await session.execute(
            sa.select(catalog_resources.c.document).where(catalog_resources.c.id == data_set)
        )
    ).scalar_one_or_none()
    if document is None or not acl.can(identity, document.get("acl", {}), "view-meta"):
        raise NotFound(f"{data_set} not found", detail={"resource-id": data_set})


async def prepare_subscription(
    session: AsyncSession,
    identity: Identity,
    document: dict[str, Any],
    before: Mapping[str, Any] | None,
) -> None:
    """Check a subscription about to be stored and set its server-managed attributes."""
    has_set, has_collection = "data-set" in document, "collection" in document
    if has_set == has_collection:
        raise InvalidInput("a subscription names either a data-set or a collection, not both")
    if has_set:
        if "filter" in document:
            raise InvalidInput("filter: a data-set subscription takes the data-set's filters")
        if before is None or before.get("data-set") != document["data-set"]:
            await _check_data_set(session, identity, document["data-set"])
    elif document["collection"] not in WATCHED_FILTERS:
        raise InvalidInput(
            f"collection: expected one of {', '.join(WATCHED_FILTERS)}",
            detail={"field": "collection"},
        )
    delivery = dict(document.setdefault("delivery", {"kind": "nats"}))
    check_delivery("delivery", delivery)
    if "secret" in delivery:
        _check_secret(delivery["secret"])
        document[SECRET_KEY] = secret_box(session).encrypt(delivery.pop("secret"))
    document["delivery"] = delivery
    if delivery["kind"] == "webhook" and SECRET_KEY not in document:
        raise InvalidInput(
            "delivery.secret: a webhook subscription needs a secret to sign deliveries with",
            detail={"field": "delivery.secret"},
        )
    if delivery["kind"] != "webhook":
        document.pop(SECRET_KEY, None)
    # Who is notified, and with which claims, never comes from the request body.
    if before is None:
        document[CLAIMS_KEY] = sorted(identity.claims)
    else:
        document[CLAIMS_KEY] = list(before.get(CLAIMS_KEY, []))


class WebhookRefused(Exception):
    """The endpoint did not take the delivery; JetStream redelivers it later."""


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return not ip.is_global


class WebhookDispatcher:
    """The handler of `catalog.subscription.>` events: POST each to its webhook, signed."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        client: httpx.AsyncClient,
        *,
        allow_private_networks: bool,
    ) -> None:
        self._sessions = sessions
        self._client = client
        self._allow_private = allow_private_networks

    async def _webhook(self, subscription_id: str) -> tuple[str, str] | None:
        """The URL and decrypted secret of a webhook subscription, None if it is no longer one."""
        async with self._sessions() as session:
            statement = sa.select(catalog_resources.c.document).where(
                catalog_resources.c.id == subscription_id
            )
            subscription = (await session.execute(statement)).scalar_one_or_none()
            if subscription is None or subscription.get("delivery", {}).get("kind") != "webhook":
                return None
            return subscription["delivery"]["url"], secret_box(session).decrypt(
                subscription[SECRET_KEY]
            )

    async def _reaches_private_network(self, url: str) -> bool:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port)
        except OSError as exc:
            raise WebhookRefused(f"cannot resolve {parts.hostname}: {exc}") from exc
        return any(_private(str(info[4][0])) for info in infos)

    async def deliver(self, event: CloudEvent) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        subscription_id = str(data.get("subscription", ""))
        webhook = await self._webhook(subscription_id)
        if webhook is None:
            return  # deleted since, or delivered on NATS only
        url, secret = webhook
        if not self._allow_private and await self._reaches_private_network(url):
            log.warning("webhook %s of %s: private address refused", url, subscription_id)
            return
        body = event.to_json()
        now = datetime.now(UTC)
        signature = Webhook(secret).sign(event.id, now, body.decode())
        headers = {
            "content-type": "application/cloudevents+json",
            "webhook-id": event.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise WebhookRefused(f"{url}: {exc!r}") from exc
        if not response.is_success:
            raise WebhookRefused(f"{url} answered {response.status_code}")
