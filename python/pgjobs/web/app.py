"""The ASGI application: routes, auth, error pages, and its lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import actions, live, pages
from .render import error_page
from .security import AuthMiddleware
from .state import Config, State, env_credentials

log = logging.getLogger("pgjobs.web")
STATIC = Path(__file__).parent / "static"


async def _http_error(request, exc: HTTPException):
    """A 4xx page for refused or malformed requests."""
    return error_page(request, exc.status_code, str(exc.detail))


async def _db_unavailable(request, exc: psycopg.OperationalError):
    """503 when the database cannot be reached."""
    log.warning("pgjobs web: database unavailable: %s", exc)
    return error_page(request, 503, "the database is unavailable; try again shortly")


async def _server_error(request, exc: Exception):
    """500 without internals (they go to the log)."""
    log.error("pgjobs web: %s %s failed", request.method, request.url.path, exc_info=exc)
    return error_page(request, 500, "internal error (see the server log)")


def app(database_url: str | Sequence[str] = "", *, read_only: bool = False,
        base_path: str = "", auth: Callable[[Any], bool | Awaitable[bool]] | None = None,
        tenant: str | None = None, user: str | None = None, password: str | None = None,
        secret: bytes | None = None, listen: bool = True,
        poll_interval: float = 1.0, **tuning: Any) -> Starlette:
    """The dashboard as an ASGI app; mount it anywhere, or run it with `pgjobs web`.

    database_url: libpq conninfo ('' = the PG* variables), or a list of them, one per
    shard (doc/sharding.md): the pages add the shards up, shard N being the N-th URL.
    read_only: hide and refuse every action. base_path: serve under this prefix (when not
    mounted by a host app). auth: callable(request) -> bool (may be async) deciding who may
    look, instead of basic auth. user/password: basic-auth credentials (default
    PGJOBS_WEB_USER / PGJOBS_WEB_PASSWORD; none: no auth). tenant: show and act on this
    database_id only. secret: CSRF key (a random one per process by default). listen:
    LISTEN for live updates (else poll).
    """
    urls = [database_url] if isinstance(database_url, str) else list(database_url)
    if not urls:
        raise ValueError("pgjobs.web.app needs a database_url (or a list of them)")
    env_user, env_password = env_credentials()
    config = Config(
        urls=urls, read_only=read_only, tenant=tenant, auth=auth,
        user=user if user is not None else env_user,
        password=password if password is not None else env_password,
        listen=listen, poll_interval=poll_interval, **tuning,
    )
    if secret is not None:
        config.secret = secret
    state = State(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        """Close the pools and the hubs on shutdown."""
        yield
        await state.close()

    routes = [
        Route("/", pages.index, name="overview"),
        Route("/jobs", pages.job_list, name="jobs"),
        Route("/jobs/action", actions.jobs_action, methods=["POST"], name="jobs_action"),
        Route("/jobs/{job_id}", pages.job_detail, name="job"),
        Route("/schedules", pages.schedules, name="schedules"),
        Route("/schedules/{schedule_id}/run", actions.schedule_run_now, methods=["POST"],
              name="schedule_run"),
        Route("/schedules/{schedule_id}/pause", actions.schedule_pause, methods=["POST"],
              name="schedule_pause"),
        Route("/schedules/{schedule_id}/resume", actions.schedule_resume, methods=["POST"],
              name="schedule_resume"),
        Route("/workers", pages.workers, name="workers"),
        Route("/events", live.events, name="events"),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {HTTPException: _http_error, psycopg.OperationalError: _db_unavailable,
                Exception: _server_error}
    inner = Starlette(routes=routes, exception_handlers=handlers,
                      middleware=[Middleware(AuthMiddleware, config=config)],
                      lifespan=None if base_path.strip("/") else lifespan)
    inner.state.pgjobs = state
    if not base_path.strip("/"):
        return inner
    prefix = "/" + base_path.strip("/")
    outer = Starlette(routes=[Mount(prefix, app=inner)], lifespan=lifespan,
                      exception_handlers={HTTPException: _http_error})
    outer.state.pgjobs = state
    return outer
