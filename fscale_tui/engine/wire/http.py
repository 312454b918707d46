"""The HTTP transport every provider uses: httpx's API over aiohttp's connection pool.

``httpx-aiohttp`` (the transport the OpenAI SDK offers) parses HTTP with aiohttp's maintained
parser: interim 1xx responses, chunked bodies with trailers, bare-LF line endings and malformed
framing are handled there, not here. It was chosen over httpx's own transport because httpcore's
pool does O(connections) work per request and capped a zero-latency batch near 220 scale
calls/s (bench/overhead.py); aiohttp's pool does not.

This module only adapts two things:

* **No silent resends.** aiohttp resends an idempotent request once when a kept-alive connection
  turns out to be closed; that send would bypass the rate limiter and the request counter. The
  session is built with that retry switched off, and the chat client's own retry loop resends
  instead (counted, rate-limited).
* **Errors map to httpx's classes by what happened.** A connection dropped before the response
  (``ServerDisconnectedError``) is a :class:`httpx.RemoteProtocolError` (not a connect timeout),
  and a response aiohttp cannot parse (``Content-Length: abc``...) is one too, instead of an
  aiohttp exception escaping the httpx API.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class ConnectionDropped(httpx.RemoteProtocolError):
    """The server closed (or reset) the connection before sending any response to the request."""


class MalformedResponse(httpx.RemoteProtocolError):
    """The server's response is not valid HTTP/1.1 (bad status line, header or framing)."""


class CertificateRejected(httpx.ConnectError):
    """The server's TLS certificate did not verify (no trusted root, wrong host, expired)."""


def _session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=0, keepalive_timeout=15.0)
    session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    # aiohttp's own resend of idempotent requests on a dropped keep-alive connection (RFC 9112
    # §9.3.1) is turned off: every send must go through the limiter and the counter.
    session._retry_connection = False
    return session


_SSL_CONTEXT: ssl.SSLContext | None = None


def ssl_context() -> ssl.SSLContext:
    """The verifying TLS context, built once per process: loading the CA bundle takes tens of
    milliseconds of CPU, which a fresh engine would otherwise pay on the event loop."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = httpx.create_ssl_context()
    return _SSL_CONTEXT


class Transport(AiohttpTransport):
    """``AiohttpTransport`` with fscale's session and exception mapping."""

    def __init__(self) -> None:
        # The CA bundle is loaded on the first https request, not here: a run on plain-HTTP
        # providers (the local models, a loopback server) never pays for it. Until then the
        # context trusts no root, so it could only fail closed.
        super().__init__(client=_session, verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            self.ssl_context = ssl_context()
        try:
            return await super().handle_async_request(request)
        except httpx.HTTPError as exc:
            cause = exc.__cause__
            # httpx-aiohttp maps every connector error to ConnectTimeout: a refused connection
            # or a rejected certificate would read "no reply within 30s" after a millisecond.
            if isinstance(cause, aiohttp.ClientConnectorCertificateError):
                raise CertificateRejected(
                    f"the TLS certificate of {request.url.host} did not verify "
                    f"({getattr(cause.certificate_error, 'verify_message', '') or 'untrusted'})",
                    request=request) from None
            if isinstance(cause, aiohttp.ClientConnectorError):
                raise httpx.ConnectError(f"cannot connect to {request.url.host}:{request.url.port} "
                                         f"({cause.strerror or 'connection failed'})",
                                         request=request) from None
            if isinstance(cause, aiohttp.ServerDisconnectedError):
                raise ConnectionDropped("the server closed the connection without a response",
                                        request=request) from None
            if isinstance(cause, aiohttp.ClientOSError) and not isinstance(cause, aiohttp.ClientConnectorError):
                raise ConnectionDropped(f"the connection was reset ({cause.strerror or 'OS error'})",
                                        request=request) from None
            raise
        except aiohttp.ClientResponseError as exc:
            raise MalformedResponse(f"malformed HTTP response ({exc.message})", request=request) from None
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(f"{type(exc).__name__}", request=request) from None


def make_client() -> httpx.AsyncClient:
    """The one ``httpx.AsyncClient`` of a run (a per-request deadline is set by the caller)."""
    return httpx.AsyncClient(transport=Transport(), timeout=httpx.Timeout(60.0, connect=10.0),
                             follow_redirects=False)
