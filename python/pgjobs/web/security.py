"""Who may see the dashboard (basic auth or the host's hook) and CSRF tokens for its forms.

CSRF: a random token lives in an HttpOnly, SameSite=Strict cookie; every form carries its
HMAC under the application's secret, and a POST whose field does not match the cookie's
HMAC is refused with 403 (an attacker who can plant a cookie still cannot compute the
field).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import secrets

from starlette.requests import Request
from starlette.responses import PlainTextResponse

from .state import Config

CSRF_COOKIE = "pgjobs_csrf"
CSRF_FIELD = "csrf"


def _same(a: str, b: str) -> bool:
    """Constant-time comparison of two strings."""
    return hmac.compare_digest(a.encode(), b.encode())


def basic_auth_ok(header: str | None, user: str, password: str) -> bool:
    """Does an Authorization header carry these basic-auth credentials?"""
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    given_user, sep, given_password = decoded.partition(":")
    # Both compared, always, so the time taken says nothing about which one was wrong.
    ok_user = _same(given_user, user)
    ok_password = _same(given_password, password)
    return bool(sep) and ok_user and ok_password


class AuthMiddleware:
    """ASGI middleware: the auth hook decides, else basic auth when credentials are set."""

    def __init__(self, app, config: Config):
        """Wrap `app`."""
        self.app = app
        self.config = config

    async def __call__(self, scope, receive, send):
        """Let the request through, or answer 401 (basic auth) / 403 (hook)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        cfg = self.config
        if cfg.auth is not None:
            allowed = cfg.auth(request)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                await PlainTextResponse("forbidden", status_code=403)(scope, receive, send)
                return
        elif cfg.user is not None and cfg.password is not None:
            if not basic_auth_ok(request.headers.get("authorization"), cfg.user, cfg.password):
                response = PlainTextResponse(
                    "authentication required", status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="pgjobs", charset="UTF-8"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def csrf_cookie(request: Request) -> tuple[str, bool]:
    """The browser's CSRF cookie value, or a new one (True: it must be set)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) == 43:
        return token, False
    return secrets.token_urlsafe(32), True


def csrf_field(config: Config, cookie: str) -> str:
    """The value forms carry for this cookie."""
    return hmac.new(config.secret, cookie.encode(), hashlib.sha256).hexdigest()


def csrf_ok(config: Config, request: Request, field: str | None) -> bool:
    """Does a POST's field match its cookie?"""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not field:
        return False
    return _same(field, csrf_field(config, cookie))
