"""What keeps the trace browser safe to run: prompts are attacker-controlled text, and a browser
tab on another site can send requests to 127.0.0.1.

- **Host check** (DNS rebinding): without a token only the loopback names are served, so a page
  whose domain was pointed at 127.0.0.1 cannot read traces.
- **Access token** (required by ``llmtrace ui`` for any address but loopback): given once as
  ``?token=...`` (then kept in an HttpOnly cookie and dropped from the URL) or as
  ``Authorization: Bearer ...``; compared in constant time.
- **CSRF**: a random per-browser value in a SameSite=Strict cookie, repeated in every form of the
  pages; a POST whose form value differs, or whose ``Origin`` is another site, is refused.
- **Headers**: a Content-Security-Policy that allows no script at all and styles only from the
  server's own stylesheet (so even markup that escaped escaping would be inert), no framing, no
  sniffing, no referrer to other sites (trace ids are in URLs), no caching of pages that carry content.
"""

from __future__ import annotations

import hmac
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import URL, Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
TOKEN_COOKIE = "llmtrace_ui_token"
CSRF_COOKIE = "llmtrace_ui_csrf"
CSRF_FIELD = "csrf"
MIN_TOKEN_CHARS = 16

CSP = ("default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # (no-referrer would make the browser send "Origin: null" with our forms)
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


class Guard:
    """ASGI middleware: host check, access token, CSRF cookie, security headers (see module doc)."""

    def __init__(self, app: ASGIApp, *, token: str | None, allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cookies = _cookies(headers.get("cookie", ""))
        if self.token is None and _host(headers.get("host", "")) not in self.allowed_hosts:
            await _secured(PlainTextResponse("llmtrace ui: unknown Host header (only the loopback names are served "
                                             "without an access token)", status_code=400))(scope, receive, send)
            return
        set_cookies: list[str] = []
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
            given = query.get("token")
            if given is not None and same(given, self.token):
                # keep it in a cookie and take it out of the address bar (and of the history)
                rest = urlencode([(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                                                keep_blank_values=True) if k != "token"])
                url = URL(scope=scope).replace(query=rest)
                target = url.path + (f"?{url.query}" if url.query else "")
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/")
                await _secured(response)(scope, receive, send)
                return
            auth = headers.get("authorization", "")
            bearer = auth[7:] if auth.lower().startswith("bearer ") else None
            if not (same(cookies.get(TOKEN_COOKIE), self.token) or same(bearer, self.token)):
                await _secured(PlainTextResponse(
                    "llmtrace ui: this server needs its access token: open the address `llmtrace ui` printed "
                    "(…/?token=…), or send Authorization: Bearer TOKEN", status_code=401))(scope, receive, send)
                return
        csrf = cookies.get(CSRF_COOKIE)
        if not csrf or len(csrf) < 20:
            csrf = secrets.token_urlsafe(24)
            set_cookies.append(f"{CSRF_COOKIE}={csrf}; Path=/; HttpOnly; SameSite=Strict")
        scope.setdefault("state", {})["csrf"] = csrf
        scope["state"]["token_required"] = self.token is not None

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                present = {k.lower() for k, _v in raw}
                raw.extend((k, v) for k, v in HEADERS if k not in present)
                if b"cache-control" not in present:
                    raw.append((b"cache-control", b"no-store"))
                raw.extend((b"set-cookie", c.encode("latin-1")) for c in set_cookies)
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_secured)


def _secured(response: Response) -> Response:
    for k, v in HEADERS:
        response.headers[k.decode()] = v.decode()
    response.headers["cache-control"] = "no-store"
    return response


def _host(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header from some other app on localhost: ignore it
        return {}
    return {k: m.value for k, m in jar.items()}


def csrf_ok(scope_state: dict, form_value: str | None, headers: Headers) -> bool:
    """A form POST is ours: its CSRF field repeats this browser's cookie, and its Origin (when the
    browser sends one) is this server."""
    origin = headers.get("origin")
    if origin and origin != "null":
        host = headers.get("host", "")
        if origin.split("://", 1)[-1].lower() != host.lower():
            return False
    elif origin == "null":
        return False
    return same(scope_state.get("csrf"), form_value)
