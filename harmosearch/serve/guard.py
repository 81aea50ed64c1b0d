"""The door of `harmosearch serve`: every request passes here before it is routed, so no route,
the page, its files and /docs included, is reached without these checks (an ASGI middleware).

    Host     an IP address, localhost, or a name given with --allow-host. Any other name is a
             DNS-rebinding attempt (a page of attacker.example whose name now points at this
             machine, reading what it answers): 400
    Origin   absent (not a browser, or a browser's same-origin GET), this server's own, or one
             given with --allow-origin, which alone gets CORS headers; any other: 403
    token    when required (bound beyond loopback, or --require-token): `Authorization: Bearer
             TOKEN` or the page's cookie. The page takes ?token=TOKEN once, sets the cookie
             (HttpOnly, SameSite=Strict) and redirects to the clean address: 401 without it
    body     at most MAX_BODY_BYTES, refused with 413 before more is read

Every answer, refusals included, carries security headers: a Content-Security-Policy letting the
page load this server's own files and nothing else, no sniffing, no framing, no referrer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from harmosearch.serve.access import Access

MAX_BODY_BYTES = 64 * 1024  # a search is well under 2 KiB; MAX_QUERY_CHARS of text and 16 phrases fit
COOKIE = "harmosearch_token"
COOKIE_SECONDS = 30 * 24 * 3600
CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's /docs and /redoc pages load their script from a CDN and start it inline.
DOCS_CSP = "frame-ancestors 'none'"
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),  # no <img> of another site shows our files
]
WRONG_HOST = (
    "this server answers to its IP addresses and localhost only; "
    "start it with --allow-host NAME to answer to another name"
)
WRONG_ORIGIN = "requests from other sites' pages are refused; start the server with --allow-origin to let one in"
NO_TOKEN = (
    "this server asks for its token: open the address harmosearch serve printed (it ends in ?token=), "
    "or send Authorization: Bearer TOKEN"
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Guard:
    """The checks above in front of `app`; `docs` are the paths of FastAPI's documentation pages."""

    def __init__(self, app: Any, access: Access, docs: tuple[str, ...] = ()) -> None:
        self.app = app
        self.access = access
        self.docs = docs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no route takes one
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        verdict = "absent" if origin is None else self.access.origin(origin, scope["scheme"], host)
        send = self._headed(send, scope["path"], origin if verdict == "allowed" else None)
        refusal = self._refusal(request, verdict)
        if refusal is None:
            receive, refusal = await _read_body(request, receive)
        await (refusal or self.app)(scope, receive, send)

    def _refusal(self, request: Request, verdict: str | None) -> Response | None:
        """The answer to a request that goes no further, None for one that may."""
        if len(request.headers.getlist("host")) != 1 or not self.access.host_allowed(request.headers["host"]):
            return refuse(400, WRONG_HOST)
        if verdict is None:
            return refuse(403, WRONG_ORIGIN)
        if verdict == "allowed" and request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            allowed = {
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            }
            return Response(status_code=204, headers=allowed)  # a preflight carries no token
        if self.access.require_token:
            return self._without_token(request)
        return None

    def _without_token(self, request: Request) -> Response | None:
        """The refusal of a request without the token; the page given ?token= sets the cookie."""
        given = request.query_params.get("token")
        if request.url.path == "/" and given is not None and request.method in ("GET", "HEAD"):
            if not self.access.token_matches(given):
                return refuse(401, NO_TOKEN)
            clean = RedirectResponse("/", status_code=303)
            secure = request.url.scheme == "https"
            clean.set_cookie(
                COOKIE, given, max_age=COOKIE_SECONDS, path="/", secure=secure, httponly=True, samesite="strict"
            )
            return clean
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if self.access.token_matches(bearer.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE)):
            return None
        return refuse(401, NO_TOKEN, {"WWW-Authenticate": "Bearer"})

    def _headed(self, send: Send, path: str, cors_origin: str | None) -> Send:
        """`send` adding the security headers (and CORS ones for a let-in origin) to the answer."""
        extra = [*HEADERS, (b"content-security-policy", (DOCS_CSP if path in self.docs else CSP).encode())]
        if cors_origin is not None:
            extra += [(b"access-control-allow-origin", cors_origin.encode("latin-1")), (b"vary", b"Origin")]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message = {**message, "headers": headers + [h for h in extra if h[0] not in present]}
            await send(message)

        return sending


def refuse(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _read_body(request: Request, receive: Receive) -> tuple[Receive, Response | None]:
    """The request's body read before the app runs, up to MAX_BODY_BYTES, and a `receive` that
    hands it on; or a 413 once it is known to be longer, without reading the rest."""
    length = request.headers.get("content-length")
    if length is not None and not (length.isascii() and length.isdigit()):
        return receive, refuse(400, "Content-Length is not a number")
    too_long = refuse(413, f"the request body is over {MAX_BODY_BYTES // 1024} KiB")
    if length is not None and int(length) > MAX_BODY_BYTES:
        return receive, too_long
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left
            pending = [message]
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_BODY_BYTES:
            return receive, too_long
        if not message.get("more_body", False):
            pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
            break

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay, None
