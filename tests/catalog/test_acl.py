"""Tests for services/catalog/acl.py: Nuvla's ACL rights, lattice, views, edits and operations."""

from __future__ import annotations

import pytest

from servicekit.errors import Forbidden, InvalidInput
from servicekit.security import ADMIN_CLAIM, Identity
from services.catalog import acl

ALICE = Identity("user/alice")
BOB = Identity("user/bob", frozenset({"group/analysts"}))
ADMIN = Identity("user/root", frozenset({ADMIN_CLAIM}))
ANON = Identity.anonymous()

RESOURCE = {
    "id": "data-object/1",
    "resource-type": "data-object",
    "name": "flood map",
    "description": "sentinel-1 flood extent",
    "created": "2026-01-01T00:00:00Z",
    "updated": "2026-01-02T00:00:00Z",
    "tags": ["flood"],
    "parent": "data-set/9",
    "bytes": 1024,
    "content-type": "image/tiff",
    "acl": {"owners": ["user/alice"]},
}
META = {"id", "resource-type", "name", "description", "created", "updated", "tags", "parent"}


# --- the lattice -------------------------------------------------------------------------------

DIRECT_EDGES = [
    ("edit-acl", "edit-data"),
    ("edit-acl", "delete"),
    ("edit-acl", "manage"),
    ("edit-acl", "view-acl"),
    ("edit-data", "edit-meta"),
    ("edit-data", "view-data"),
    ("edit-meta", "view-meta"),
    ("delete", "view-meta"),
    ("view-acl", "view-data"),
    ("view-data", "view-meta"),
]


@pytest.mark.parametrize(("stronger", "weaker"), DIRECT_EDGES)
def test_each_nuvla_edge_is_a_direct_implication(stronger: str, weaker: str) -> None:
    assert weaker in acl.IMPLIES[stronger]


def test_the_table_has_exactly_nuvlas_edges() -> None:
    edges = {(right, weaker) for right, weakers in acl.IMPLIES.items() for weaker in weakers}
    assert edges == set(DIRECT_EDGES)
    assert set(acl.IMPLIES) == set(acl.RIGHTS)


@pytest.mark.parametrize(
    ("right", "closure"),
    [
        ("edit-acl", set(acl.RIGHTS)),
        ("edit-data", {"edit-data", "edit-meta", "view-data", "view-meta"}),
        ("edit-meta", {"edit-meta", "view-meta"}),
        ("view-acl", {"view-acl", "view-data", "view-meta"}),
        ("view-data", {"view-data", "view-meta"}),
        ("delete", {"delete", "view-meta"}),
        ("manage", {"manage"}),
        ("view-meta", {"view-meta"}),
    ],
)
def test_implied_is_the_transitive_closure(right: str, closure: set[str]) -> None:
    assert acl.implied(right) == closure


@pytest.mark.parametrize(("stronger", "weaker"), DIRECT_EDGES)
def test_holding_a_right_grants_what_it_implies(stronger: str, weaker: str) -> None:
    assert acl.can(BOB, {"owners": ["user/alice"], stronger: ["user/bob"]}, weaker)


def test_edit_meta_does_not_grant_view_data() -> None:
    assert not acl.can(BOB, {"owners": ["user/alice"], "edit-meta": ["user/bob"]}, "view-data")


def test_unknown_right_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown right 'read'"):
        acl.can(ALICE, {"owners": ["user/alice"]}, "read")


# --- normalisation -----------------------------------------------------------------------------


def test_normalize_makes_implied_rights_explicit_sorted_and_unique() -> None:
    given = {"owners": ["user/z", "user/a", "user/a"], "edit-data": ["user/c", "user/b", "user/c"]}
    assert acl.normalize_acl(given) == {
        "owners": ["user/a", "user/z"],
        "view-meta": ["user/b", "user/c"],
        "view-data": ["user/b", "user/c"],
        "edit-meta": ["user/b", "user/c"],
        "edit-data": ["user/b", "user/c"],
    }


def test_normalize_drops_owners_from_rights_lists() -> None:
    given = {"owners": ["user/alice"], "view-acl": ["user/alice", "group/analysts"]}
    assert acl.normalize_acl(given) == {
        "owners": ["user/alice"],
        "view-meta": ["group/analysts"],
        "view-data": ["group/analysts"],
        "view-acl": ["group/analysts"],
    }


def test_normalize_drops_rights_left_empty() -> None:
    assert acl.normalize_acl({"owners": ["user/alice"], "manage": []}) == {"owners": ["user/alice"]}


def test_normalize_is_idempotent() -> None:
    once = acl.normalize_acl({"owners": ["user/a"], "edit-acl": ["group/g"], "delete": ["user/d"]})
    assert acl.normalize_acl(once) == once


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"owners": ["user/a"], "read": ["user/b"]}, "acl.read"),
        ({"owners": "user/a"}, "acl.owners"),
        ({"owners": ["user/a"], "view-data": "user/b"}, "acl.view-data"),
        ({"owners": ["user/a"], "view-data": {"user/b": True}}, "acl.view-data"),
        ({"owners": ["alice"]}, "acl.owners"),
        ({"owners": ["user/a"], "edit-meta": ["bob"]}, "acl.edit-meta"),
        ({"owners": ["user/a"], "delete": [7]}, "acl.delete"),
        ({"owners": []}, "acl.owners"),
        ({"view-meta": ["user/b"]}, "acl.owners"),
    ],
)
def test_normalize_rejects_malformed_acls_naming_the_key(given: dict, field: str) -> None:
    with pytest.raises(InvalidInput, match=field.removeprefix("acl.")) as caught:
        acl.normalize_acl(given)
    assert caught.value.detail["field"] == field


def test_normalize_rejects_a_non_mapping() -> None:
    with pytest.raises(InvalidInput, match="expected an object"):
        acl.normalize_acl(["user/a"])  # type: ignore[arg-type]


# --- rights of a caller ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "given", "expected"),
    [
        (ALICE, {"owners": ["user/alice"]}, set(acl.RIGHTS)),
        (BOB, {"owners": ["group/analysts"]}, set(acl.RIGHTS)),
        (ADMIN, {"owners": ["user/alice"]}, set(acl.RIGHTS)),
        (BOB, {"owners": ["user/alice"]}, set()),
        (
            BOB,
            {"owners": ["user/alice"], "view-data": ["group/analysts"]},
            {"view-data", "view-meta"},
        ),
        (ANON, {"owners": ["user/alice"], "view-meta": ["group/extract-anon"]}, {"view-meta"}),
        (BOB, {"owners": ["user/alice"], "manage": ["user/bob"]}, {"manage"}),
    ],
)
def test_rights_of_a_caller(identity: Identity, given: dict, expected: set[str]) -> None:
    assert acl.rights(identity, given) == expected


def test_require_passes_when_the_right_is_held() -> None:
    acl.require(ALICE, {"owners": ["user/alice"]}, "delete", "data-object/1")


def test_require_names_the_right_and_the_resource() -> None:
    with pytest.raises(Forbidden, match=r"'delete' right on data-object/1") as caught:
        acl.require(
            BOB, {"owners": ["user/alice"], "view-acl": ["user/bob"]}, "delete", "data-object/1"
        )
    assert caught.value.detail == {"right": "delete", "resource-id": "data-object/1"}


def test_default_acl_makes_the_creator_the_owner() -> None:
    assert acl.default_acl(BOB) == {"owners": ["user/bob"]}


def test_default_acl_refuses_an_anonymous_owner() -> None:
    with pytest.raises(Forbidden, match="anonymous"):
        acl.default_acl(ANON)


# --- principals for query filtering ------------------------------------------------------------

SHARED = acl.normalize_acl(
    {"owners": ["user/alice"], "view-data": ["group/analysts"], "delete": ["user/dave"]}
)


@pytest.mark.parametrize(
    ("right", "expected"),
    [
        ("view-meta", {ADMIN_CLAIM, "user/alice", "group/analysts", "user/dave"}),
        ("view-data", {ADMIN_CLAIM, "user/alice", "group/analysts"}),
        ("delete", {ADMIN_CLAIM, "user/alice", "user/dave"}),
        ("edit-acl", {ADMIN_CLAIM, "user/alice"}),
    ],
)
def test_principals_with_a_right(right: str, expected: set[str]) -> None:
    assert acl.principals_with(SHARED, right) == expected


def test_principals_with_follows_implication_on_unnormalised_acls() -> None:
    raw = {"owners": ["user/alice"], "edit-acl": ["user/erin"]}
    assert "user/erin" in acl.principals_with(raw, "view-meta")


# --- segments: what a caller sees and may change -----------------------------------------------


@pytest.mark.parametrize(
    ("held", "expected_keys"),
    [
        (acl.implied("view-acl"), set(RESOURCE)),
        (acl.implied("view-data"), set(RESOURCE) - {"acl"}),
        (acl.implied("view-meta"), META),
        (acl.implied("manage"), None),
    ],
)
def test_visible_view_by_strongest_view_right(held: frozenset, expected_keys: set | None) -> None:
    view = acl.visible_view(RESOURCE, held)
    assert (None if view is None else set(view)) == expected_keys


@pytest.mark.parametrize(
    ("held", "expected"),
    [
        (acl.implied("edit-acl"), set(RESOURCE)),
        (acl.implied("edit-data"), set(RESOURCE) - {"acl"}),
        (acl.implied("edit-meta"), META),
        (acl.implied("view-acl"), set()),
    ],
)
def test_editable_keys_by_strongest_edit_right(held: frozenset, expected: set) -> None:
    assert acl.editable_keys(RESOURCE, held) == expected


@pytest.mark.parametrize(
    ("right", "change", "refused"),
    [
        ("edit-meta", {"bytes": 2048}, ["bytes"]),
        ("edit-meta", {"content-type": None}, ["content-type"]),
        ("edit-meta", {"acl": {"owners": ["user/bob"]}}, ["acl"]),
        ("edit-data", {"acl": {"owners": ["user/bob"]}, "bytes": 1}, ["acl"]),
        ("view-acl", {"name": "renamed"}, ["name"]),
    ],
)
def test_check_edit_refuses_keys_beyond_the_right(right: str, change: dict, refused: list) -> None:
    new = {**RESOURCE, **change}
    with pytest.raises(Forbidden, match=", ".join(refused)) as caught:
        acl.check_edit(RESOURCE, new, acl.implied(right))
    assert caught.value.detail == {"keys": refused}


@pytest.mark.parametrize(
    ("right", "change"),
    [
        ("edit-meta", {"name": "renamed", "tags": []}),
        ("edit-data", {"bytes": 2048, "description": "new"}),
        ("edit-acl", {"acl": {"owners": ["user/bob"]}}),
        ("view-meta", {}),
    ],
)
def test_check_edit_allows_keys_within_the_right(right: str, change: dict) -> None:
    acl.check_edit(RESOURCE, {**RESOURCE, **change}, acl.implied(right))


def test_check_edit_counts_a_removed_key_as_a_change() -> None:
    new = {key: value for key, value in RESOURCE.items() if key != "bytes"}
    with pytest.raises(Forbidden, match="bytes"):
        acl.check_edit(RESOURCE, new, acl.implied("edit-meta"))


# --- operations --------------------------------------------------------------------------------

ID = "data-object/1"


@pytest.mark.parametrize(
    ("right", "rels"),
    [
        ("edit-acl", ["edit", "delete"]),
        ("edit-data", ["edit"]),
        ("edit-meta", ["edit"]),
        ("delete", ["delete"]),
        ("view-acl", []),
    ],
)
def test_standard_operations_follow_rights(right: str, rels: list[str]) -> None:
    assert acl.operations(ID, acl.implied(right)) == [{"rel": rel, "href": ID} for rel in rels]


def test_extra_actions_appear_with_the_right_they_need() -> None:
    ops = acl.operations(ID, acl.implied("manage"), {"replicate": "manage", "purge": "delete"})
    assert ops == [{"rel": "replicate", "href": f"{ID}/replicate"}]


def test_extra_action_with_an_unknown_right_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown right 'own'"):
        acl.operations(ID, acl.ALL_RIGHTS, {"replicate": "own"})
