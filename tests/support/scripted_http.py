"""A scripted transport for a real ``requests.Session``.

The session under test is the real one (``scim.new_session``: its auth,
headers, redirect handling, netrc and environment merging all run); only the
transport is fake: a ``requests.adapters.BaseAdapter`` mounted for http://
and https:// that answers each request with the next scripted step and
records what was sent. No socket is ever opened.

A step is a :class:`Reply`, an exception instance (raised as the transport
would raise it), or a callable taking the :class:`Sent` request and returning
either. Running out of steps fails the test loudly.

A :class:`Reply` with ``chunks`` is streamed as a socket would deliver it:
its body is read chunk by chunk through ``raw.stream`` (as urllib3 does), an
exception among the chunks is raised there (a connection cut mid-body), and a
callable among them is called when the reader gets that far (to move a fake
clock, or to prove the reader stopped before it).
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qsl, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from nss_cache_coreweave import config, scim

BASE = "https://api.coreweave.test/scim/cw-test"
TOKEN = "cw-T0KEN-d0-not-log-me"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER_EXTENSION = config.USER_EXTENSION


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # bytes are sent as they are; anything else as JSON
    headers: Dict[str, str] = field(default_factory=dict)
    chunks: Optional[List[Any]] = None  # bytes, exceptions, callables: a streamed body

    def content(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


class StreamedBody:
    """``response.raw`` for a Reply: its scripted chunks, as urllib3's
    HTTPResponse.stream would hand them over."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.delivered = 0  # body bytes handed to the reader
        self.closed = False

    def stream(self, amt=None, decode_content=None):
        """What requests' iter_content reads from urllib3."""
        for item in self.chunks:
            if isinstance(item, BaseException):
                raise item
            if callable(item):
                item()
                continue
            self.delivered += len(item)
            yield item

    def close(self):
        self.closed = True

    def release_conn(self):
        pass


def cut(after: bytes) -> list:
    """Chunks of a body that stops after ``after``: the connection was cut
    (urllib3 reports an IncompleteRead as a ProtocolError)."""
    import urllib3

    return [after, urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")]


@dataclass
class Sent:
    method: str
    url: str
    path: str
    query: str
    params: Dict[str, str]
    headers: Dict[str, str]
    timeout: Any
    verify: Any


def page(resources, total: Optional[int] = None, **fields) -> Reply:
    """A SCIM ListResponse; ``total`` defaults to len(resources). Pass a field
    as ``None`` via ``fields`` to send it as JSON null; pass ``omit=[...]`` to
    leave fields out."""
    omit = fields.pop("omit", ())
    body = {
        "schemas": [LIST_RESPONSE],
        "totalResults": len(resources) if total is None else total,
        "itemsPerPage": len(resources),
        "Resources": list(resources),
    }
    body.update(fields)
    for name in omit:
        body.pop(name, None)
    return Reply(200, body)


def users(*ids: str) -> List[dict]:
    return [{"id": i, "userName": f"{i}@example.com"} for i in ids]


def scim_error(status: int, detail: Optional[str] = None, scim_type: Optional[str] = None, headers=None) -> Reply:
    body: Dict[str, Any] = {"schemas": [ERROR], "status": str(status)}
    if detail is not None:
        body["detail"] = detail
    if scim_type is not None:
        body["scimType"] = scim_type
    return Reply(status, body, dict(headers or {}))


class ScriptedTransport(BaseAdapter):
    def __init__(self, *steps):
        super().__init__()
        self.steps = list(steps)
        self.sent: List[Sent] = []
        self.streamed: Optional[StreamedBody] = None  # the last streamed body

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        parts = urlsplit(request.url)
        sent = Sent(
            method=request.method,
            url=request.url,
            path=parts.path,
            query=parts.query,
            params=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=dict(request.headers),
            timeout=timeout,
            verify=verify,
        )
        self.sent.append(sent)
        if not self.steps:
            raise AssertionError(f"unscripted request: {request.method} {request.url}")
        step = self.steps.pop(0)
        if callable(step) and not isinstance(step, Reply):
            step = step(sent)
        if isinstance(step, BaseException):
            raise step
        return self._response(request, step)

    def _response(self, request, reply: Reply) -> requests.Response:
        response = requests.Response()
        response.status_code = reply.status
        response.reason = http.client.responses.get(reply.status, "")
        response.headers = CaseInsensitiveDict(reply.headers)
        if reply.chunks is not None:
            response.raw = self.streamed = StreamedBody(reply.chunks)
        else:
            content = reply.content()
            response._content = content
            response._content_consumed = True
            response.raw = StreamedBody([content] if content else [])
        response.encoding = "utf-8"
        response.url = request.url
        response.request = request
        response.connection = self
        return response

    def close(self):
        pass

    # What the tests read most.
    def params(self) -> List[Dict[str, str]]:
        return [s.params for s in self.sent]

    def paths(self) -> List[str]:
        return [s.path for s in self.sent]


def server(**overrides) -> config.Server:
    values = dict(
        base_url=BASE,
        users_url=BASE + "/Users",
        groups_url=BASE + "/Groups",
        token=TOKEN,
        page_size=2,
        pagination="index",
        timeout=7.5,
        retries=3,
        verify=True,
    )
    values.update(overrides)
    return config.Server(**values)


def session_with(transport: ScriptedTransport, srv: config.Server, new_session=None) -> requests.Session:
    """The package's own Session, with the scripted transport mounted."""
    session = (new_session or scim.new_session)(srv)
    session.mount("https://", transport)
    session.mount("http://", transport)
    return session


PAGES = Path(__file__).resolve().parent.parent / "data" / "pages"


def load_page(name: str) -> dict:
    """A SCIM page from tests/data/pages (docs/coreweave-iam-scim.md §8)."""
    return json.loads((PAGES / name).read_text())
