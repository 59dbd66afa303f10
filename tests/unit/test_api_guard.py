"""The API's input checks at their edges (the real agent is tested in
tests/integration/test_api_bounds.py): odd query numbers, odd JSON, a body just at the cap."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx serves here
    warnings.simplefilter("ignore")  # StarletteDeprecationWarning
    from starlette.testclient import TestClient

from chimera_ops.agent.api_guard import (
    ApiError,
    BodyCap,
    api_error_handler,
    json_object,
    page_limit,
    query_float,
)

CAP = 1000


async def _echo(request: Request) -> Response:
    body = await json_object(request, {"reason": str, "wait": bool, "timeout": (int, float)})
    return JSONResponse(body)


async def _page(request: Request) -> Response:
    return JSONResponse(
        {"limit": page_limit(request, 200, 1000), "since": query_float(request, "since")}
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = Starlette(
        routes=[Route("/echo", _echo, methods=["POST"]), Route("/page", _page)],
        middleware=[Middleware(BodyCap, limit=CAP)],
        exception_handlers={ApiError: api_error_handler},
    )
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("query", "limit"),
    [("", 200), ("limit=1", 1), ("limit=1000", 1000), ("limit=1001", 1000), ("limit=007", 7)],
)
def test_limits_default_and_cap(client: TestClient, query: str, limit: int) -> None:
    assert client.get(f"/page?{query}").json()["limit"] == limit


def test_a_limit_of_thousands_of_digits_is_capped_not_a_500(client: TestClient) -> None:
    assert client.get("/page?limit=" + "9" * 5000).json()["limit"] == 1000


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=%D9%A3", "limit"),  # an Arabic-Indic three: a digit to str.isdigit, not to us
        ("limit=1e3", "limit"),
        ("limit= 5", "limit"),
        ("since=inf", "since"),
        ("since=1e999", "since"),
        ("since=abc", "since"),
    ],
)
def test_bad_query_numbers_are_400_naming_the_parameter(
    client: TestClient, query: str, field: str
) -> None:
    reply = client.get(f"/page?{query}")
    assert reply.status_code == 400 and reply.json()["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"null", "body"),
        (b'"text"', "body"),
        (b"\xff\xfe", "body"),
        (b"[" * 990, "body"),  # deeper nesting: tests/integration/test_api_bounds.py
        (b'{"reason": null, "wait": 1}', "wait"),
        (b'{"timeout": true}', "timeout"),
        (b'{"timeout": NaN}', "timeout"),
        (b'{"other": 1}', "other"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(client: TestClient, body: bytes, field: str) -> None:
    reply = client.post("/echo", content=body)
    assert reply.status_code == 400 and reply.json()["field"] == field, reply.text


def test_good_bodies_pass(client: TestClient) -> None:
    assert client.post("/echo", content=b"").json() == {}
    assert client.post("/echo", content=b'{"timeout": 2, "wait": false}').json() == {
        "timeout": 2,
        "wait": False,
    }


def test_the_cap_counts_declared_and_streamed_bytes(client: TestClient) -> None:
    at_cap = b'{"reason": "' + b"x" * (CAP - 14) + b'"}'
    assert len(at_cap) == CAP
    assert client.post("/echo", content=at_cap).status_code == 200
    over = client.post("/echo", content=at_cap + b" ")
    assert over.status_code == 413 and over.json()["limit_bytes"] == CAP

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, counted as it streams
        for _ in range(10):
            yield b" " * 300

    streamed = client.post("/echo", content=chunks())
    assert streamed.status_code == 413
