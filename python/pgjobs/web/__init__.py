"""pgjobs web: a live dashboard for queues, jobs, schedules and workers (`pgjobs[web]`).

    import pgjobs.web
    asgi_app = pgjobs.web.app(database_url="postgresql:///app", read_only=True)

Needs the web extras: pip install "pgjobs[web]".
"""

from __future__ import annotations

try:
    from .app import app as _app
except ImportError as exc:  # starlette, jinja2 or uvicorn missing
    raise ImportError(
        f'pgjobs web needs its extras ({exc.name} is missing): pip install "pgjobs[web]"',
        name=exc.name,
    ) from exc

app = _app

__all__ = ["app"]
