"""Raw HTTP/1.1 over loopback sockets, for requests no HTTP client would send.

:func:`http_request` builds the exact bytes, :func:`exchange` sends them on a
new connection and reads the answer, :func:`judge` says what is wrong with
it (a 5xx, no answer where one is due, a status outside the expected ones, a
2xx on a token-only route without a valid token). :func:`tracebacks` finds
tracebacks in a server's output. Used by ``test_reliability_hostile.py``.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "IO_TIMEOUT",
    "TRACEBACK_MARKERS",
    "Bytes",
    "Case",
    "Outcome",
    "as_bytes",
    "exchange",
    "form_body",
    "http_request",
    "judge",
    "tracebacks",
]

#: Per request: connect, send and read the answer within this many seconds.
IO_TIMEOUT = 10.0

#: What server output must never contain: Python tracebacks and the servers' "unhandled
#: exception" log lines (uvicorn/Starlette, Flask, werkzeug's socketserver, gunicorn).
TRACEBACK_MARKERS = (
    "Traceback (most recent call last)",
    "Exception in ASGI application",
    "Exception on ",
    "Exception occurred during processing of request",
    "Error handling request",
    "Unhandled exception",
)


Bytes = bytes | str


def as_bytes(value: Bytes) -> bytes:
    """``value`` as bytes (text as UTF-8, lone surrogates kept)."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def http_request(
    method: Bytes,
    target: Bytes,
    headers: Sequence[tuple[Bytes, Bytes]] = (),
    body: bytes = b"",
    *,
    version: bytes = b"HTTP/1.1",
    host: bool = True,
    length: bool | None = None,
) -> bytes:
    """The bytes of one request, exactly as given; adds ``Host``, ``Connection: close`` and,
    for a body (or ``length=True``), ``Content-Length``."""
    lines = [as_bytes(method) + b" " + as_bytes(target) + b" " + version]
    if host:
        lines.append(b"Host: 127.0.0.1")
    lines += [as_bytes(name) + b": " + as_bytes(value) for name, value in headers]
    if length or (length is None and body):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Case:
    """One request. ``may_close``: why a bare close or reset is a fine answer (else it is not).
    ``expect``: the statuses allowed, where the design fixes them (else any below 500)."""

    name: str
    data: bytes
    may_close: str = ""
    expect: tuple[int, ...] = ()
    half_close: bool = False
    #: For the "no 2xx without credentials" invariant: the request goes to a token-only route.
    token_route: bool = False


@dataclass(frozen=True)
class Outcome:
    kind: str  # "response", "closed", "reset", "timeout"
    status: int | None
    head: bytes

    def __str__(self) -> str:
        return f"{self.status}" if self.status is not None else f"{self.kind} ({self.head[:80]!r})"


_STATUS = re.compile(rb"HTTP/\d\.\d (\d{3}) ")
#: Python's http.server (under werkzeug) answers a request line it cannot parse the HTTP/0.9
#: way, an error page without a status line; the page says the status.
_HTTP09_ERROR = re.compile(rb"<p>Error code: (\d{3})</p>")


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def _final_answer(buf: bytes, head_only: bool) -> tuple[int, bytes] | None:
    """``(status, head)`` once ``buf`` holds a whole final answer (interim 1xx skipped; a 101 is
    final), else None. An answer without Content-Length ends when the server closes."""
    while True:
        end = buf.find(b"\r\n\r\n")
        found = _STATUS.match(buf)
        if end < 0 or found is None:
            return None
        status = int(found.group(1))
        if 100 <= status < 200 and status != 101:
            buf = buf[end + 4 :]
            continue
        length = _CONTENT_LENGTH.search(buf[: end + 2])
        if status in (101, 204, 304) or head_only or (length and len(buf) - end - 4 >= int(length.group(1))):
            return status, buf[:200]
        return None


def exchange(port: int, case: Case) -> Outcome:
    """Send ``case`` on a new connection; read the answer (to its Content-Length, else until the
    server closes the connection)."""
    buf = b""
    kind = "closed"
    head_only = case.data[:5].upper() == b"HEAD "
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        deadline = time.monotonic() + IO_TIMEOUT
        with contextlib.suppress(OSError):  # the server may answer and close before reading it all
            sock.sendall(case.data)
            if case.half_close:
                sock.shutdown(socket.SHUT_WR)
        while True:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                kind = "timeout"
                break
            except OSError:
                kind = "reset"
                break
            if not chunk:
                break
            buf += chunk
            answer = _final_answer(buf, head_only)
            if answer is not None:
                return Outcome("response", *answer)
    while (interim := _STATUS.match(buf)) and 100 <= int(interim.group(1)) < 200 and b"\r\n\r\n" in buf:
        buf = buf.partition(b"\r\n\r\n")[2]  # a 100 Continue, then the close
    found = _STATUS.match(buf) or _HTTP09_ERROR.search(buf[:4096])
    if found:
        return Outcome("response", int(found.group(1)), buf[:200])
    return Outcome(kind, None, buf[:200])


def judge(case: Case, outcome: Outcome, valid_tokens: Sequence[str]) -> str | None:
    """What is wrong with ``outcome`` for ``case``, or None."""
    if outcome.status is None:
        # a close, with nothing or with an HTTP/0.9-style answer (werkzeug's to "GET /")
        if outcome.kind in ("closed", "reset") and case.may_close:
            return None
        return f"no HTTP answer: {outcome}"
    if outcome.status >= 500:
        return f"answered {outcome.status}"
    if case.expect and outcome.status not in case.expect:
        return f"answered {outcome.status}, expected one of {case.expect}"
    if (
        case.token_route
        and 200 <= outcome.status < 300
        and not case.data.startswith(b"OPTIONS ")  # Flask's automatic OPTIONS: an Allow header, no view runs
        and not any(t.encode() in case.data for t in valid_tokens)
    ):
        return f"answered {outcome.status} without a valid token"
    return None


def form_body(fields: Sequence[tuple[str, str]]) -> bytes:
    """``application/x-www-form-urlencoded``, every byte of the UTF-8 values percent-encoded."""

    def enc(text: str) -> str:
        return "".join(f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass"))

    return "&".join(f"{enc(k)}={enc(v)}" for k, v in fields).encode()


def tracebacks(output: str) -> list[str]:
    """Excerpts of ``output`` around each traceback marker (lines cut to 300 characters)."""
    lines = [line[:300] for line in output.splitlines()]
    marked = [i for i, line in enumerate(lines) if any(m in line for m in TRACEBACK_MARKERS)]
    excerpts: list[str] = []
    end = -1
    for i in marked:
        if i <= end:
            continue
        end = i + 1
        while end < len(lines) and (lines[end][:1].isspace() or lines[end].startswith(("Traceback", "During"))):
            end += 1
        end = min(end + 1, len(lines), i + 60)
        excerpts.append("\n".join(lines[max(0, i - 3) : end]))
    return excerpts
