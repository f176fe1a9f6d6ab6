"""The explain page: why one SKU's count is what it is (`shopsync explain SKU`)."""

from __future__ import annotations

from aiohttp import web

from agent.web import keys
from agent.web.pages import charts
from agent.web.pages.backend import Api, ApiError
from agent.web.pages.render import render
from agent.web.pages.session import page

__all__ = ["explain_page"]


@page
async def explain_page(request: web.Request) -> web.StreamResponse:
    """`?sku=X`: X's count term by term, what each shop shows, the count over time and the
    latest changes."""
    sku = request.query.get("sku", "").strip()
    account, error = None, ""
    if sku:
        try:
            account = await Api(request).get("/explain", sku=sku)
        except ApiError as exc:
            error = exc.message
    title = f"Why {sku} is at its count" if sku else "Explain a count"
    over_time = None
    if account is not None:
        now = request.config_dict[keys.CLOCK].now()
        over_time = charts.history_chart(account.get("history") or [], now)
    return render(
        request,
        "explain.html",
        title=title,
        sku=sku,
        account=account,
        error=error,
        over_time=over_time,
    )
