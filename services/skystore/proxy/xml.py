"""S3's XML documents: the responses the proxy writes and the request bodies it reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from urllib.parse import quote
from xml.etree import ElementTree as ET

from fastapi import Response

from servicekit.errors import BadRequest

__all__ = [
    "NS",
    "iso",
    "parse_complete_multipart",
    "parse_delete",
    "parse_location_constraint",
    "xml_response",
]

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML_BODY = 1024 * 1024

Node = tuple[str, object]  # (tag, text | list of Node | None)


def iso(value: datetime | None) -> str:
    return (
        value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z" if value else ""
    )


def _build(parent: ET.Element, nodes: Iterable[Node]) -> None:
    for tag, content in nodes:
        element = ET.SubElement(parent, tag)
        if isinstance(content, list):
            _build(element, content)
        elif content is not None:
            element.text = str(content).lower() if isinstance(content, bool) else str(content)


def xml_response(
    root: str, nodes: Sequence[Node], *, status: int = 200, text: str | None = None
) -> Response:
    element = ET.Element(root, xmlns=NS)
    element.text = text
    _build(element, nodes)
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element, encoding="utf-8")
    return Response(body, status, media_type="application/xml")


def encode_key(value: str, url: bool) -> str:
    """`encoding-type=url`: keys percent-encoded, so any byte survives XML."""
    return quote(value, safe="/") if url else value


def _parse(body: bytes, what: str) -> ET.Element:
    if len(body) > MAX_XML_BODY:
        raise BadRequest(f"{what} body is larger than {MAX_XML_BODY} bytes", code="MalformedXML")
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise BadRequest(
            f"{what} body is not well-formed XML: {exc}", code="MalformedXML"
        ) from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ET.Element, name: str) -> str | None:
    found = _children(element, name)
    return (found[0].text or "") if found else None


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    """DeleteObjects: (keys, quiet)."""
    root = _parse(body, "Delete")
    keys = [_text(item, "Key") for item in _children(root, "Object")]
    if not keys or any(k is None or k == "" for k in keys) or len(keys) > 1000:
        raise BadRequest(
            "Delete needs 1 to 1000 <Object><Key>…</Key></Object>", code="MalformedXML"
        )
    quiet = (_text(root, "Quiet") or "").strip().lower() == "true"
    return [k for k in keys if k], quiet


def parse_complete_multipart(body: bytes) -> list[tuple[int, str]]:
    """CompleteMultipartUpload: [(part number, etag)] in the order given."""
    root = _parse(body, "CompleteMultipartUpload")
    parts = []
    for part in _children(root, "Part"):
        number, etag = _text(part, "PartNumber"), _text(part, "ETag")
        if not number or not number.strip().isdigit() or etag is None:
            raise BadRequest("every <Part> needs a <PartNumber> and an <ETag>", code="MalformedXML")
        parts.append((int(number), etag.strip()))
    if not parts:
        raise BadRequest("CompleteMultipartUpload lists no parts", code="MalformedXML")
    return parts


def parse_location_constraint(body: bytes) -> str | None:
    if not body.strip():
        return None
    root = _parse(body, "CreateBucketConfiguration")
    return _text(root, "LocationConstraint") or None
