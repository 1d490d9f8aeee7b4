"""uvicorn's HTTP/1.1 protocol (httptools) with a bound on the request head.

Neither uvicorn nor httptools bounds a request's head: a 128 MB header was gathered piece by
piece, in time quadratic in its size, and stalled every other request on the event loop. Here
the bytes of an unfinished head are counted as they arrive and the head's size and header
count are checked once parsed; past either bound the client gets a 431 with the service's JSON
error and the connection is closed, before any application code runs.
"""

from __future__ import annotations

import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a refused head."""


def bounded_protocol(max_head_bytes: int, max_headers: int) -> type[HttpToolsProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with these bounds."""

    class BoundedHead(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            self._reset_head()
            super().connection_made(transport)

        def _reset_head(self) -> None:
            self._in_head, self._raw_head, self._head_size, self._count = True, 0, 0, 0

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return
            if self._in_head:
                self._raw_head += len(data)
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserCallbackError:
                if self._over():  # HeadTooLarge, raised from on_header
                    self._refuse()
                    return
                self._bad_request()
            except httptools.HttpParserUpgrade:
                self._unsupported_upgrade_warning()  # this service serves no websockets
            except httptools.HttpParserError:
                self._bad_request()
            else:
                # a head still unfinished after this much: refuse without parsing more
                if self._in_head and self._raw_head > max_head_bytes:
                    self._refuse()

        def _over(self) -> bool:
            return self._head_size > max_head_bytes or self._count > max_headers

        def on_message_begin(self) -> None:
            self._reset_head()
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._head_size += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_size += len(name) + len(value) + 4
            self._count += 1
            if self._over():
                raise HeadTooLarge
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def _bad_request(self) -> None:
            # uvicorn's own answer to a request it cannot parse
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)

        def _refuse(self) -> None:
            body = json.dumps({"error": {
                "code": "request_header_fields_too_large",
                "message": f"the request's head exceeds {max_head_bytes} bytes or "
                           f"{max_headers} header fields"}}).encode()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n"
                b"connection: close\r\n\r\n" + body)
            self.transport.close()

    return BoundedHead
