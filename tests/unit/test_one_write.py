"""The gevent worker's client socket: a response whose head announces its length
leaves in one sendall with its body; anything else leaves as it is written."""

from ecommerce.workers import OneWriteSocket

HEAD = b"HTTP/1.1 201 CREATED\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"


class Recorder:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)

    def fileno(self) -> int:
        return 42


def test_a_sized_head_leaves_with_the_body_in_one_write():
    raw = Recorder()
    sock = OneWriteSocket(raw)  # type: ignore[arg-type]
    sock.sendall(HEAD)
    assert raw.sent == []
    sock.sendall(b'{"id":1}\n    ')
    assert raw.sent == [HEAD + b'{"id":1}\n    ']
    sock.flush()  # nothing left to send
    assert len(raw.sent) == 1


def test_a_head_without_a_body_is_sent_when_the_request_is_done():
    raw = Recorder()
    sock = OneWriteSocket(raw)  # type: ignore[arg-type]
    head = HEAD.replace(b"13", b"0")
    sock.sendall(head)
    sock.flush()
    assert raw.sent == [head]


def test_a_streamed_head_and_a_whole_error_page_are_not_held():
    raw = Recorder()
    sock = OneWriteSocket(raw)  # type: ignore[arg-type]
    streamed = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sock.sendall(streamed)
    whole = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno"
    sock.sendall(whole)
    assert raw.sent == [streamed, whole]
    assert sock.fileno() == 42  # the rest is the socket's own
