"""CloudEvents 1.0 JSON structured mode (servicekit.cloudevents)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from servicekit.cloudevents import CloudEvent
from servicekit.errors import InvalidInput

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def make_event(**overrides) -> CloudEvent:
    fields = {
        "type": "catalog.data-object.ready",
        "source": "/catalog/data-object/1234",
        "data": {"id": "data-object/1234", "bytes": 42, "tags": ["raw"]},
        "subject": "data-object/1234",
    }
    fields.update(overrides)
    return CloudEvent(**fields)


def test_an_event_round_trips_through_json() -> None:
    event = make_event(extensions={"traceparent": TRACEPARENT, "signature": "eyJh..sig"})
    assert CloudEvent.from_json(event.to_json()) == event


def test_the_json_carries_the_specified_attributes() -> None:
    event = make_event(time=datetime(2025, 5, 6, 7, 8, 9, 10, tzinfo=UTC))
    document = json.loads(event.to_json())
    assert document == {
        "specversion": "1.0",
        "id": event.id,
        "source": "/catalog/data-object/1234",
        "type": "catalog.data-object.ready",
        "subject": "data-object/1234",
        "time": "2025-05-06T07:08:09.000010Z",
        "datacontenttype": "application/json",
        "data": {"id": "data-object/1234", "bytes": 42, "tags": ["raw"]},
    }


def test_defaults_are_a_fresh_id_and_the_current_utc_time() -> None:
    before = datetime.now(UTC)
    first, second = make_event(), make_event()
    assert first.id != second.id
    assert first.time is not None and before <= first.time <= datetime.now(UTC)
    assert first.time.tzinfo is UTC


def test_times_in_other_offsets_are_written_in_utc() -> None:
    moment = datetime(2025, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5)))
    document = json.loads(make_event(time=moment).to_json())
    assert document["time"] == "2025-01-01T17:00:00.000000Z"
    assert CloudEvent.from_json(json.dumps(document)).time == moment


def test_extensions_are_top_level_attributes() -> None:
    event = make_event(extensions={"traceparent": TRACEPARENT, "signature": "abc", "hops": 2})
    document = json.loads(event.to_json())
    assert (document["traceparent"], document["signature"], document["hops"]) == (
        TRACEPARENT,
        "abc",
        2,
    )
    assert CloudEvent.from_json(event.to_json()).extensions == {
        "traceparent": TRACEPARENT,
        "signature": "abc",
        "hops": 2,
    }


def test_binary_data_travels_as_data_base64() -> None:
    event = make_event(data=b"\x00\x01spectrum", datacontenttype="application/octet-stream")
    document = json.loads(event.to_json())
    assert "data" not in document
    assert document["data_base64"] == "AAFzcGVjdHJ1bQ=="
    assert CloudEvent.from_json(event.to_json()).data == b"\x00\x01spectrum"


def test_an_event_without_data_or_subject_round_trips() -> None:
    event = make_event(data=None, subject=None)
    document = json.loads(event.to_json())
    assert "data" not in document and "subject" not in document
    assert CloudEvent.from_json(event.to_json()) == event


@pytest.mark.parametrize("missing", ["specversion", "id", "source", "type"])
def test_a_missing_required_attribute_is_named(missing: str) -> None:
    document = json.loads(make_event().to_json())
    del document[missing]
    with pytest.raises(InvalidInput, match=f"required attribute '{missing}' is missing") as caught:
        CloudEvent.from_json(json.dumps(document).encode())
    assert caught.value.detail == {"attribute": missing}


def test_another_specversion_is_refused() -> None:
    document = json.loads(make_event().to_json())
    document["specversion"] = "0.3"
    with pytest.raises(InvalidInput, match=r"specversion '0\.3' is not supported"):
        CloudEvent.from_json(json.dumps(document))


@pytest.mark.parametrize(
    ("change", "attribute"),
    [
        ({"id": ""}, "id"),
        ({"source": 7}, "source"),
        ({"type": None}, "type"),
        ({"subject": ""}, "subject"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2025-01-01T00:00:00"}, "time"),
        ({"data_base64": "%%%"}, "data_base64"),
        ({"Bad_Name": 1}, "Bad_Name"),
        ({"traceparent": {"nested": True}}, "traceparent"),
    ],
)
def test_malformed_attributes_are_named(change: dict, attribute: str) -> None:
    document = json.loads(make_event().to_json())
    if "data_base64" in change:
        del document["data"]
    document.update(change)
    with pytest.raises(InvalidInput) as caught:
        CloudEvent.from_json(json.dumps(document))
    assert caught.value.detail == {"attribute": attribute}


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInput, match="cloudevent: "):
        CloudEvent.from_json(raw)


def test_naive_times_and_bad_extension_names_are_refused_at_construction() -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        make_event(time=datetime(2025, 1, 1))
    with pytest.raises(InvalidInput, match="lower-case letters or digits"):
        make_event(extensions={"trace-parent": "x"})
    with pytest.raises(InvalidInput, match="context attribute"):
        make_event(extensions={"subject": "x"})


def test_data_that_is_not_json_serialisable_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not JSON-serialisable"):
        make_event(data={"when": datetime.now(UTC)}).to_json()
