"""Templates, their filters, the throughput chart, and responses built from them."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import quote, unquote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from . import security

FLASH_COOKIE = "pgjobs_flash"

env = Environment(
    loader=PackageLoader("pgjobs.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def age(value: timedelta | None) -> str:
    """A duration as 4.2s, 3.1m, 5.0h or 2.3d ('-' for None)."""
    if value is None:
        return "-"
    seconds = value.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 120:
        return f"{sign}{seconds:.1f}s"
    if seconds < 7200:
        return f"{sign}{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{sign}{seconds / 3600:.1f}h"
    return f"{sign}{seconds / 86400:.1f}d"


def when(value: datetime | None) -> str:
    """A timestamp to the second, with its offset ('-' for None)."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value.strftime("%Y-%m-%d %H:%M:%S %z")


def count(value: int | None, estimated: bool = False) -> str:
    """A count with thousands separators; estimates get '~' and 2-3 significant digits."""
    if value is None:
        return "-"
    if not estimated:
        return f"{value:,}"
    if value == 0:
        return "~0"
    rounded = int(float(f"{value:.2g}")) if value >= 1000 else value
    return f"~{rounded:,}"


def pretty_json(text: str | None) -> str:
    """JSON text indented for reading (as given when it does not parse)."""
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def throughput_svg(buckets: list[tuple[int, int]], width: int = 600,
                   height: int = 90) -> Markup:
    """Bars per minute (oldest left): completed (green) under failed (red)."""
    peak = max([c + f for c, f in buckets] + [1])
    bar = width / max(len(buckets), 1)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height + 14}" width="{width}" '
             f'height="{height + 14}" role="img" aria-label="jobs finished per minute">']
    for i, (done, failed) in enumerate(buckets):
        x = i * bar
        h_done = height * done / peak
        h_failed = height * failed / peak
        title = f"{len(buckets) - i} min ago: {done} completed, {failed} failed"
        parts.append(f"<g><title>{escape(title)}</title>")
        if done:
            parts.append(f'<rect x="{x:.1f}" y="{height - h_done:.1f}" width="{bar - 1:.1f}" '
                         f'height="{h_done:.1f}" class="ok"/>')
        if failed:
            parts.append(f'<rect x="{x:.1f}" y="{height - h_done - h_failed:.1f}" '
                         f'width="{bar - 1:.1f}" height="{h_failed:.1f}" class="bad"/>')
        parts.append("</g>")
    parts.append(f'<line x1="0" y1="{height}" x2="{width}" y2="{height}" class="axis"/>')
    parts.append(f'<text x="0" y="{height + 12}">-60 min</text>')
    parts.append(f'<text x="{width}" y="{height + 12}" text-anchor="end">now</text>')
    parts.append(f'<text x="{width}" y="10" text-anchor="end">peak {peak}/min</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def qs(params: dict) -> str:
    """A query string from the non-empty values."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


env.filters.update(age=age, when=when, count=count, pretty_json=pretty_json)
env.globals.update(qs=qs, throughput_svg=throughput_svg, utc=timezone.utc)


def base_path(request: Request) -> str:
    """Where the dashboard is mounted ('' at the root)."""
    return request.scope.get("root_path", "").rstrip("/")


def render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    """A page: the template with the common context, the CSRF cookie, the flash consumed."""
    state = request.app.state.pgjobs
    cookie, new = security.csrf_cookie(request)
    flash = request.cookies.get(FLASH_COOKIE)
    base = base_path(request)
    sharded = state.sharded

    def job_url(job_id: int, shard: int = 0) -> str:
        """A job's page (its shard in the query string when there are several)."""
        return f"{base}/jobs/{job_id}" + (f"?shard={shard}" if sharded else "")

    def worker_anchor(worker_id: str, shard: int = 0) -> str:
        """The id of a worker's row on /workers (a worker id is per shard)."""
        return f"w-{shard}-{worker_id}" if sharded else f"w-{worker_id}"

    html = env.get_template(template).render(
        request=request,
        base=base,
        read_only=state.config.read_only,
        tenant=state.config.tenant,
        csrf=security.csrf_field(state.config, cookie),
        flash=unquote(flash)[:500] if flash else None,
        live_mode=state.live_mode,
        sharded=sharded,
        shard_count=len(state.config.urls),
        job_url=job_url,
        worker_anchor=worker_anchor,
        here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    if new:
        response.set_cookie(security.CSRF_COOKIE, cookie, path=base or "/", httponly=True,
                            samesite="strict")
    if flash:
        response.delete_cookie(FLASH_COOKIE, path=base or "/")
    return response


def set_flash(response, request: Request, text: str) -> None:
    """Show `text` on the next page this browser opens."""
    response.set_cookie(FLASH_COOKIE, quote(text[:500]), path=base_path(request) or "/",
                        httponly=True, samesite="strict", max_age=60)


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    """A 4xx/5xx page without internals."""
    if "pgjobs" not in request.app.state._state:
        return HTMLResponse(str(escape(message)), status_code=status_code)
    return render(request, "error.html", status_code=status_code, status=status_code,
                  message=message)
