"""The Rules page: this shop's stock rules, every shop's, the group's rule and bundles, and a
tester."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from aiohttp import web

from agent.bundles import BundleError, components_from_text
from agent.rules import RuleError, edited, rules_from_wire
from agent.web.pages.backend import Api, ApiError
from agent.web.pages.render import redirect, render
from agent.web.pages.session import page

__all__ = ["post_bundles", "post_locations", "post_priority", "post_rules", "rules_page"]

FIELDS = ("buffer", "percent", "plus", "max")


@page
async def rules_page(request: web.Request) -> web.StreamResponse:
    """Every shop's rules and the group's; `?sku=X&pool=N` also shows what each would publish."""
    api = Api(request)
    view, peers, bundles, locations = await asyncio.gather(
        api.get("/rules"), api.get("/peers"), api.get("/bundles"), api.get("/locations")
    )
    sku, pool = request.query.get("sku", "").strip(), request.query.get("pool", "").strip()
    test, test_error = None, ""
    if sku:
        try:
            test = await api.get("/rules/test", sku=sku, pool=pool)
        except ApiError as exc:
            test_error = exc.message
    shops = {shop: rules_from_wire(wire) for shop, wire in view["shops"].items()}
    members = sorted({view["shop"], *(p["domain"] for p in peers["peers"] if p["state"] != "left")})
    return render(
        request,
        "rules.html",
        title="Stock rules",
        view=view,
        own=shops.get(view["shop"], rules_from_wire(view["rules"])),
        shops=shops,
        members=members,
        test=test,
        test_error=test_error,
        sku=sku,
        pool=pool,
        bundles=bundles["bundles"],
        locations=locations,
    )


async def _form(request: web.Request) -> dict[str, str]:
    return {k: v.strip() for k, v in (await request.post()).items() if isinstance(v, str)}


@page
async def post_rules(request: web.Request) -> web.StreamResponse:
    """Set this shop's rules, or one SKU's (`shopsync rules set|unset … [--sku P]`): a field
    left empty is no rule; "remove" drops a SKU's rules."""
    data = await _form(request)
    sku = data.get("sku") or None
    api = Api(request)
    try:
        current = rules_from_wire((await api.get("/rules"))["rules"])
        if data.get("remove") == "yes":
            rules = edited(current, sku=sku)
        else:
            put = [f"{name}={data[name]}" for name in FIELDS if data.get(name)]
            drop = [name for name in FIELDS if not data.get(name)]
            if sku is not None and not put:
                raise RuleError("give that SKU at least one rule, or remove its rules")
            rules = edited(current, put=put, drop=drop, sku=sku)
        await api.post("/rules", {"rules": rules.to_wire()})
    except (ApiError, RuleError) as exc:
        message = exc.message if isinstance(exc, ApiError) else str(exc)
        redirect("/rules", f"Rules not changed: {message}", ok=False)
    redirect("/rules", "Rules saved; counts that change are being written now.")


@page
async def post_priority(request: web.Request) -> web.StreamResponse:
    """Set the group's rule (`shopsync rules set --priority SHOP --at-most N`), or none."""
    data = await _form(request)
    shop, at_most = data.get("shop", ""), data.get("at_most", "")
    body: dict[str, object] = {"priority": None}
    if shop:
        if not at_most.isdigit():
            redirect("/rules", "Give the pool at or below which the priority shop sells.", ok=False)
        body = {"priority": {"shop": shop, "at_most": int(at_most)}}
    try:
        await Api(request).post("/rules/priority", body)
    except ApiError as exc:
        redirect("/rules", f"Group rule not changed: {exc.message}", ok=False)
    done = f"{shop} is the priority shop" if shop else "No priority shop"
    redirect("/rules", f"{done}; every member is told.")


@page
async def post_bundles(request: web.Request) -> web.StreamResponse:
    """Add or redefine a bundle (`shopsync bundles add SKU PART:QTY…`), or remove one."""
    data = await _form(request)
    sku = data.get("bundle", "")
    api = Api(request)
    try:
        if data.get("remove") == "yes":
            await api.call("DELETE", "/bundles/" + quote(sku, safe=""))
            redirect("/rules", f"{sku} is no longer a bundle; every member is told.")
        bundle = components_from_text(sku, [data.get("components", "")])
        await api.post("/bundles", bundle.to_wire())
    except (ApiError, BundleError) as exc:
        message = exc.message if isinstance(exc, ApiError) else str(exc)
        redirect("/rules", f"Bundle not saved: {message}", ok=False)
    redirect("/rules", f"{sku} is a bundle of {bundle.describe()}; every member is told.")


@page
async def post_locations(request: web.Request) -> web.StreamResponse:
    """Link a location to warehouses (`shopsync locations set LOC W…`), or unlink one; with
    "dry run" ticked, say what each listing there would show and change nothing."""
    data = await _form(request)
    location = data.get("location", "")
    remove = data.get("remove") == "yes"
    warehouses = [] if remove else [w.strip() for w in data.get("warehouses", "").split(",")]
    dry_run = data.get("dry_run") == "yes"
    body = {"location": location, "warehouses": [w for w in warehouses if w], "dry_run": dry_run}
    if not remove and not body["warehouses"]:
        redirect("/rules#locations-h", "Name the warehouses it sells from, in order.", ok=False)
    try:
        answer = await Api(request).post("/locations", body)
    except ApiError as exc:
        redirect("/rules#locations-h", f"Locations not changed: {exc.message}", ok=False)
    preview = answer["preview"]
    changes = [
        f"{r['sku']} {r['shows']} → {r['would_show']}"
        for r in preview["rows"]
        if r["would_show"] is not None and r["would_show"] != r["shows"]
    ]
    shown = "; ".join(changes[:5]) + (" …" if len(changes) > 5 else "")
    counts = f"{preview['changes']} of {preview['listings']} listings there"
    if dry_run:
        redirect("/rules#locations-h", f"Dry run, nothing changed: {counts} would change. {shown}")
    if answer.get("restart_required"):
        done = "Saved; restart the agent to sync the locations added or removed."
    else:
        done = f"Saved and applied: {counts} change. {shown}"
    redirect("/rules#locations-h", done.strip())
