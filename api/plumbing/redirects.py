"""Redirects name a path, never a host: Starlette's slash redirect (``/models/`` to
``/models``) builds an absolute URL from the request's ``Host`` header, so a spoofed header
would send the client elsewhere. A relative ``Location`` is valid HTTP (RFC 9110, 10.2.2)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RelativeRedirects:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def relative(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = MutableHeaders(scope=message)
                if location := headers.get("location"):
                    parts = urlsplit(location)
                    headers["location"] = urlunsplit(("", "", parts.path or "/", parts.query,
                                                      parts.fragment))
            await send(message)

        await self.app(scope, receive, relative)
