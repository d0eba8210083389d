"""Errors mapped to each wire format: problem+json, Nuvla, S3 XML, Open Inference Protocol."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET

import pytest
from fastapi import APIRouter, FastAPI, HTTPException, Query
from pydantic import BaseModel

from servicekit.app import create_service_app
from servicekit.errors import Conflict, NotFound, TooManyRequests
from servicekit.logs import JsonFormatter
from servicekit.settings import ServiceSettings
from servicekit.testing import app_client
from servicekit.wire_errors import WireFormat, install_error_handlers


class Item(BaseModel):
    name: str
    size: int


def errors_router() -> APIRouter:
    router = APIRouter()

    @router.get("/objects/{key}")
    async def get_object(key: str) -> None:
        raise NotFound(
            f"object {key} does not exist",
            code="NoSuchKey",
            detail={"resource-id": f"data-object/{key}", "Key": key},
        )

    @router.get("/conflict")
    async def conflict() -> None:
        raise Conflict("data-object is READY; only NEW objects can be uploaded to")

    @router.get("/markup")
    async def markup() -> None:
        raise Conflict("a <b> & 'c' \x00 d")

    @router.get("/slow-down")
    async def slow_down() -> None:
        raise TooManyRequests("too many requests", headers={"Retry-After": "7"})

    @router.get("/closed")
    async def closed() -> None:
        raise HTTPException(status_code=499, detail="client closed request")

    @router.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    @router.post("/items")
    async def create_item(item: Item, limit: int = Query(...)) -> Item:
        return item

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("password=hunter2 in /etc/secret")

    return router


def service(wire_format: WireFormat) -> FastAPI:
    return create_service_app(
        name="errors",
        settings=ServiceSettings(),
        routers=[errors_router()],
        wire_format=wire_format,
    )


async def test_problem_json_carries_status_title_detail_code_and_extensions() -> None:
    async with app_client(service(WireFormat.PROBLEM)) as client:
        response = await client.get("/objects/k1")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "about:blank"
    assert body["title"] == "Not Found"
    assert body["status"] == 404
    assert body["detail"] == "object k1 does not exist"
    assert body["code"] == "NoSuchKey"
    assert body["resource-id"] == "data-object/k1"


async def test_problem_json_instance_names_the_request_id() -> None:
    async with app_client(service(WireFormat.PROBLEM)) as client:
        response = await client.get("/conflict", headers={"X-Request-ID": "req-42"})
    assert response.json()["instance"] == "urn:extract:request:req-42"


async def test_nuvla_error_has_status_message_and_resource_id() -> None:
    async with app_client(service(WireFormat.NUVLA)) as client:
        response = await client.get("/objects/k1", headers={"X-Request-ID": "req-1"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "status": 404,
        "message": "object k1 does not exist",
        "resource-id": "data-object/k1",
        "request-id": "req-1",
    }


async def test_nuvla_error_without_a_resource_leaves_resource_id_out() -> None:
    async with app_client(service(WireFormat.NUVLA)) as client:
        response = await client.get("/conflict")
    assert response.status_code == 409
    assert "resource-id" not in response.json()


async def test_s3_error_is_xml_with_code_message_resource_and_request_id() -> None:
    async with app_client(service(WireFormat.S3)) as client:
        response = await client.get("/objects/k1", headers={"X-Request-ID": "req-7"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/xml"
    assert response.text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    error = ET.fromstring(response.content)
    assert error.tag == "Error"
    assert error.findtext("Code") == "NoSuchKey"
    assert error.findtext("Message") == "object k1 does not exist"
    assert error.findtext("Key") == "k1"
    assert error.findtext("Resource") == "/objects/k1"
    assert error.findtext("RequestId") == "req-7"


async def test_s3_error_escapes_markup_and_drops_characters_xml_cannot_hold() -> None:
    async with app_client(service(WireFormat.S3)) as client:
        response = await client.get("/markup")
    assert ET.fromstring(response.content).findtext("Message") == "a <b> & 'c' \ufffd d"


async def test_oip_error_is_an_error_member_with_the_request_id() -> None:
    async with app_client(service(WireFormat.OIP)) as client:
        response = await client.get("/conflict", headers={"X-Request-ID": "req-9"})
    assert response.status_code == 409
    assert response.json() == {
        "error": "data-object is READY; only NEW objects can be uploaded to",
        "request_id": "req-9",
    }


async def test_invalid_input_is_a_400_naming_every_field_and_what_was_wrong() -> None:
    async with app_client(service(WireFormat.PROBLEM)) as client:
        response = await client.post("/items", params={"limit": "many"}, json={"name": "x"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "InvalidArgument"
    locations = {error["location"] for error in body["errors"]}
    assert locations == {"query.limit", "body.size"}
    assert all(error["message"] for error in body["errors"])
    assert "query.limit" in body["detail"] and "body.size" in body["detail"]


async def test_invalid_input_in_oip_says_what_was_wrong_in_the_error_member() -> None:
    async with app_client(service(WireFormat.OIP)) as client:
        response = await client.post("/items", params={"limit": 1}, json={"name": "x"})
    assert response.status_code == 400
    assert "body.size: Field required" in response.json()["error"]


async def test_unknown_route_is_a_404_in_the_wire_format() -> None:
    async with app_client(service(WireFormat.S3)) as client:
        response = await client.get("/no/such/route")
    assert response.status_code == 404
    error = ET.fromstring(response.content)
    assert error.findtext("Code") == "NotFound"
    assert error.findtext("Message") == "Not Found: GET /no/such/route"


async def test_wrong_method_is_a_405_that_keeps_the_allow_header() -> None:
    async with app_client(service(WireFormat.PROBLEM)) as client:
        response = await client.delete("/conflict")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["code"] == "MethodNotAllowed"


async def test_http_exception_keeps_its_status_and_message() -> None:
    async with app_client(service(WireFormat.NUVLA)) as client:
        response = await client.get("/teapot")
    assert response.status_code == 418
    assert response.json()["message"] == "short and stout"


async def test_a_status_outside_the_registry_is_still_rendered() -> None:
    async with app_client(service(WireFormat.PROBLEM)) as client:
        response = await client.get("/closed")
    assert response.status_code == 499
    assert response.json()["title"] == "HTTP 499"


async def test_error_headers_reach_the_response() -> None:
    async with app_client(service(WireFormat.PROBLEM)) as client:
        response = await client.get("/slow-down")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"


@pytest.mark.parametrize("wire_format", list(WireFormat))
async def test_unhandled_exception_is_a_generic_500_that_leaks_nothing(
    wire_format: WireFormat,
) -> None:
    async with app_client(service(wire_format)) as client:
        response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert "req-500" in response.text


async def test_unhandled_exception_is_logged_with_traceback_and_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="servicekit.errors")
    caplog.handler.setFormatter(JsonFormatter("errors"))
    async with app_client(service(WireFormat.PROBLEM)) as client:
        await client.get("/boom", headers={"X-Request-ID": "req-500"})
    lines = [json.loads(text) for text in caplog.text.splitlines()]
    (line,) = [line for line in lines if line["logger"] == "servicekit.errors"]
    assert line["request_id"] == "req-500"
    assert "RuntimeError: password=hunter2" in line["exc"]


async def test_handlers_work_on_an_app_without_the_chassis() -> None:
    app = FastAPI()
    app.include_router(errors_router())
    install_error_handlers(app, WireFormat.PROBLEM)
    async with app_client(app) as client:
        response = await client.get("/conflict")
    assert response.status_code == 409
    assert response.json()["code"] == "Conflict"
    assert "instance" not in response.json()
