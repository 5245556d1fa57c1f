"""The gevent worker's lean parse of a request's head reads every head as
pywsgi's own parse (the email parser) reads it: the same values, the same
WSGI keys, the same refusals. Checked against that parse itself."""

import http.client
import io

import pytest
from gevent.pywsgi import OldMessage, WSGIHandler, headers_factory
from hypothesis import given, settings
from hypothesis import strategies as st

from ecommerce.workers import LeanHeaders, _LeanHandler, read_head

NAMES = st.sampled_from(
    [
        "Host",
        "Content-Type",
        "content-length",
        "X-Request-ID",
        "Idempotency-Key",
        "Cookie",
        "X_Bad",
        "Connection",
        "transfer-encoding",
        "Accept",
        "X-Place-Token",
    ]
) | st.from_regex(r"[\x21-\x39\x3b-\x7e]{1,12}", fullmatch=True)
VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20)


def _environ_items(headers):
    handler = WSGIHandler.__new__(WSGIHandler)
    handler.headers = headers
    return list(WSGIHandler._headers(handler))


def _lean_environ_items(headers):
    handler = _LeanHandler.__new__(_LeanHandler)
    handler.headers = headers
    return list(handler._headers())


def _compare(head: bytes) -> None:
    theirs = headers_factory(io.BytesIO(head))
    ours = read_head(io.BytesIO(head))
    assert ours.status == theirs.status
    for name in ("host", "CONTENT-LENGTH", "Transfer-Encoding", "connection", "missing"):
        assert ours.get(name, "-") == theirs.get(name, "-")
        assert ours.getheader(name) == theirs.getheader(name)
    assert ours.typeheader == theirs.typeheader
    assert list(ours.headers) == list(theirs.headers)
    assert list(ours.items()) == list(theirs.items())
    assert _lean_environ_items(ours) == _environ_items(theirs)
    del ours["content-length"], theirs["content-length"]
    assert list(ours.items()) == list(theirs.items())


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(NAMES, VALUES, st.sampled_from([": ", ":", ":\t ", ":  "])), max_size=12))
def test_a_plain_head_reads_as_the_email_parser_reads_it(lines):
    head = "".join(f"{name}{colon}{value}\r\n" for name, value, colon in lines) + "\r\n"
    raw = head.encode("iso-8859-1")
    _compare(raw)
    if "\r" not in "".join(v for _, v, _ in lines):
        assert isinstance(read_head(io.BytesIO(raw)), LeanHeaders)  # the lean path taken


@pytest.mark.parametrize(
    "head",
    [
        b"Host: x\r\nX-Folded: a\r\n  b\r\n\r\n",  # an obsolete folded line
        b"Host: x\r\nno colon here\r\n\r\n",
        b"Host: x\r\nBad Name: y\r\n\r\n",
        b"Host: x\r\nA: b\rc\r\n\r\n",  # a stray CR
        b"Host: x\nA: b\n\n",  # bare LFs
        b"Host: x\r\n",  # the connection closed mid-head
        b"\r\n",
        b"From nobody\r\nHost: x\r\n\r\n",
    ],
)
def test_any_other_head_is_read_by_the_email_parser(head):
    _compare(head)
    if head != b"\r\n":
        assert isinstance(read_head(io.BytesIO(head)), OldMessage)


def test_the_bounds_are_http_clients():
    too_long = b"A: " + b"x" * 70_000 + b"\r\n\r\n"
    assert read_head(io.BytesIO(too_long)).status == headers_factory(io.BytesIO(too_long)).status
    too_many = b"".join(b"H%d: v\r\n" % n for n in range(101)) + b"\r\n"
    with pytest.raises(http.client.HTTPException):
        headers_factory(io.BytesIO(too_many))
    with pytest.raises(http.client.HTTPException):
        read_head(io.BytesIO(too_many))
