"""Nuvla's resource ACL model: rights, their lattice, and what a caller may see and do."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from servicekit.errors import Forbidden, InvalidInput
from servicekit.security import ADMIN_CLAIM, Identity, check_principal

OWNERS = "owners"

# The rights of a resource ACL, in Nuvla's order (spec/acl_resource.clj); `owners` is not a
# right but a list of principals holding all of them.
RIGHTS: tuple[str, ...] = (
    "view-meta",
    "view-data",
    "view-acl",
    "edit-meta",
    "edit-data",
    "edit-acl",
    "manage",
    "delete",
)

# Direct implications, edge for edge as Nuvla's `rights-hierarchy` (auth/acl_resource.clj):
# holding the key grants every right listed, and transitively what those grant.
IMPLIES: Mapping[str, frozenset[str]] = {
    "edit-acl": frozenset({"edit-data", "delete", "manage", "view-acl"}),
    "edit-data": frozenset({"edit-meta", "view-data"}),
    "edit-meta": frozenset({"view-meta"}),
    "delete": frozenset({"view-meta"}),
    "view-acl": frozenset({"view-data"}),
    "view-data": frozenset({"view-meta"}),
    "manage": frozenset(),
    "view-meta": frozenset(),
}

ALL_RIGHTS = frozenset(RIGHTS)

# Nuvla's `metadata-keys`: what view-meta shows and edit-meta may change.
METADATA_KEYS = frozenset(
    {
        "id",
        "resource-type",
        "created",
        "updated",
        "name",
        "description",
        "tags",
        "subtype",
        "parent",
        "resource-metadata",
        "operations",
    }
)

# Keys a caller sees, from the strongest view right it holds down; None means every key.
_VIEWABLE: tuple[tuple[str, frozenset[str] | None, frozenset[str]], ...] = (
    ("view-acl", None, frozenset()),
    ("view-data", None, frozenset({"acl"})),
    ("view-meta", METADATA_KEYS, frozenset()),
)

# Keys a caller may change, from the strongest edit right it holds down (Nuvla's editable-keys).
_EDITABLE: tuple[tuple[str, frozenset[str] | None, frozenset[str]], ...] = (
    ("edit-acl", None, frozenset()),
    ("edit-data", None, frozenset({"acl"})),
    ("edit-meta", METADATA_KEYS, frozenset()),
)

# Nuvla's standard resource operations and the rights of which any one grants each.
STANDARD_OPERATIONS: tuple[tuple[str, frozenset[str]], ...] = (
    ("edit", frozenset({"edit-meta", "edit-data", "edit-acl"})),
    ("delete", frozenset({"delete"})),
)


@functools.cache
def implied(right: str) -> frozenset[str]:
    """The right itself and every right it implies, transitively."""
    _check_right(right)
    closure = {right}
    pending = [right]
    while pending:
        for weaker in IMPLIES[pending.pop()] - closure:
            closure.add(weaker)
            pending.append(weaker)
    return frozenset(closure)


def normalize_acl(acl: Mapping[str, Any]) -> dict[str, list[str]]:
    """Validate an ACL and return Nuvla's canonical form.

    Owners are sorted and de-duplicated; each right lists, sorted, the principals granted it or a
    right implying it, never an owner (owners hold everything); rights left empty are dropped.
    """
    if not isinstance(acl, Mapping):
        raise InvalidInput(f"acl: expected an object, got {type(acl).__name__}")
    unknown = sorted(str(key) for key in acl if key != OWNERS and key not in RIGHTS)
    if unknown:
        raise InvalidInput(
            f"acl: unknown right {', '.join(map(repr, unknown))}; "
            f"expected {OWNERS} or one of {', '.join(RIGHTS)}",
            detail={"field": f"acl.{unknown[0]}"},
        )
    owners = _principals(acl, OWNERS)
    if not owners:
        raise InvalidInput(
            f"acl.{OWNERS}: at least one owner is required", detail={"field": f"acl.{OWNERS}"}
        )
    granted: dict[str, set[str]] = {right: set() for right in RIGHTS}
    for right in RIGHTS:
        grantees = _principals(acl, right) - owners
        for weaker in implied(right):
            granted[weaker] |= grantees
    canonical = {OWNERS: sorted(owners)}
    canonical.update({right: sorted(granted[right]) for right in RIGHTS if granted[right]})
    return canonical


def rights(identity: Identity, acl: Mapping[str, Any]) -> frozenset[str]:
    """Every right `identity` holds on a resource with this ACL; owners and admins hold all."""
    if identity.is_admin or identity.claims & set(acl.get(OWNERS, ())):
        return ALL_RIGHTS
    held: set[str] = set()
    for right in RIGHTS:
        if identity.claims & set(acl.get(right, ())):
            held |= implied(right)
    return frozenset(held)


def can(identity: Identity, acl: Mapping[str, Any], right: str) -> bool:
    _check_right(right)
    return right in rights(identity, acl)


def require(identity: Identity, acl: Mapping[str, Any], right: str, resource_id: str) -> None:
    """Raise Forbidden unless `identity` holds `right` on the resource."""
    if not can(identity, acl, right):
        raise Forbidden(
            f"{identity.principal} lacks the '{right}' right on {resource_id}",
            detail={"right": right, "resource-id": resource_id},
        )


def default_acl(identity: Identity) -> dict[str, list[str]]:
    """The ACL of a resource `identity` creates: the creator is its only owner, as in Nuvla."""
    if identity.principal == Identity.anonymous().principal:
        # An anonymous owner would be every caller: a resource open by accident.
        raise Forbidden("anonymous callers cannot own resources: authenticate first")
    return {OWNERS: [identity.principal]}


def principals_with(acl: Mapping[str, Any], right: str) -> frozenset[str]:
    """Principals holding `right`: owners, admins, and those granted it or a right implying it."""
    holders = {ADMIN_CLAIM, *acl.get(OWNERS, ())}
    for granted in _granting(right):
        holders.update(acl.get(granted, ()))
    return frozenset(holders)


@functools.cache
def _granting(right: str) -> tuple[str, ...]:
    """The rights that grant `right`: itself and those that imply it."""
    _check_right(right)
    return tuple(granted for granted in RIGHTS if right in implied(granted))


def visible_view(resource: Mapping[str, Any], held: Iterable[str]) -> dict[str, Any] | None:
    """The part of `resource` a caller holding `held` may see; None if it may see nothing."""
    keys = _keys_for(resource.keys(), frozenset(held), _VIEWABLE)
    if keys is None:
        return None
    return {key: value for key, value in resource.items() if key in keys}


def editable_keys(keys: Iterable[str], held: Iterable[str]) -> frozenset[str]:
    """Which of `keys` a caller holding `held` may change."""
    return _keys_for(keys, frozenset(held), _EDITABLE) or frozenset()


def check_edit(old: Mapping[str, Any], new: Mapping[str, Any], held: Iterable[str]) -> None:
    """Raise Forbidden, naming the keys, if `new` changes keys of `old` the caller may not edit."""
    changed = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    refused = sorted(changed - editable_keys(changed, held))
    if refused:
        where = f" on {old['id']}" if "id" in old else ""
        raise Forbidden(
            f"not allowed to change {', '.join(refused)}{where}: "
            "data keys need edit-data, the acl needs edit-acl",
            detail={"keys": refused},
        )


def operations(
    resource_id: str, held: Iterable[str], actions: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """The operations a caller may perform, as Nuvla lists them on a resource.

    `actions` maps each extra action name to the right it needs (usually "manage"); an action's
    href is `<resource_id>/<action>`.
    """
    held = frozenset(held)
    ops = [
        {"rel": rel, "href": resource_id}
        for rel, granting in STANDARD_OPERATIONS
        if held & granting
    ]
    for action, right in (actions or {}).items():
        _check_right(right)
        if right in held:
            ops.append({"rel": action, "href": f"{resource_id}/{action}"})
    return ops


def _keys_for(
    keys: Iterable[str],
    held: frozenset[str],
    table: tuple[tuple[str, frozenset[str] | None, frozenset[str]], ...],
) -> frozenset[str] | None:
    for right, allowed, hidden in table:
        if right in held:
            scoped = set(keys) if allowed is None else allowed.intersection(keys)
            return frozenset(scoped - hidden)
    return None


def _principals(acl: Mapping[str, Any], key: str) -> set[str]:
    values = acl.get(key, [])
    if not isinstance(values, list):
        raise InvalidInput(
            f"acl.{key}: expected a list of principals, got {type(values).__name__}",
            detail={"field": f"acl.{key}"},
        )
    for value in values:
        try:
            check_principal(value)
        except ValueError as error:
            raise InvalidInput(f"acl.{key}: {error}", detail={"field": f"acl.{key}"}) from None
    return set(values)


def _check_right(right: str) -> None:
    if right not in IMPLIES:
        raise ValueError(f"unknown right {right!r}; expected one of {', '.join(RIGHTS)}")
