"""The OpenAPI 3.1 document of the admin API (`/api`) and the agent-to-agent API (`/peer`).

Built once at import from the handlers' real shapes (`agent/web/api.py`, `agent/peer_service.py`)
and served at `GET /api/openapi.json`, behind the admin token like the rest of `/api`.
`tests/test_fuzz.py` runs schemathesis against a live agent with this document, so a handler
whose answers drift from it fails there.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from agent import __version__
from agent.alerts import KINDS as ALERT_KINDS
from agent.synclog import KINDS

__all__ = ["DOCUMENT", "document", "serve"]

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
INT64: Schema = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
PAGE_SIZE: Schema = {"type": "integer", "minimum": 1, "maximum": 1000}


def _null(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _blank(schema: Schema) -> Schema:
    """A query parameter that may also be sent empty, which means absent."""
    return {"anyOf": [schema, {"type": "string", "maxLength": 0}]}


#: The words a yes/no query parameter takes (`?mismatch=1`, `?report=false`).
FLAG_WORDS = ("1", "0", "true", "false", "yes", "no")
FLAG = _blank({"enum": list(FLAG_WORDS)})


def _list(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def _obj(props: dict[str, Schema], *, optional: tuple[str, ...] = (), **extra: Any) -> Schema:
    """An object whose properties are all required but those named `optional`."""
    return {
        "type": "object",
        "properties": props,
        "required": [name for name in props if name not in optional],
        **extra,
    }


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


SKU: Schema = {"type": "string", "minLength": 1, "maxLength": 255}
#: One part of a bundle: a SKU of the group and how many of it one bundle takes.
COMPONENT = _obj({"sku": SKU, "quantity": {"type": "integer", "minimum": 1, "maximum": 100_000}})

#: A change of this shop's that an import counts (or, joining again, discards).
COUNTED = _obj(
    {
        "sku": STR,
        "item_id": STR,
        "shop": INT,
        "last_seen": INT,
        "change": INT,
        "group_before": INT,
        "group_after": INT,
    }
)


def _tuple(*items: Schema) -> Schema:
    return {"type": "array", "prefixItems": list(items), "minItems": len(items), "items": False}


ITEM = _obj({"item_id": STR, "title": STR})
VECTOR = _list(_tuple({"type": "string", "minLength": 1}, STR, {"type": "integer", "minimum": 0}))
SIGNATURE = {"type": "string", "description": "Ed25519 signature, base64 (88 characters)"}
ADMISSION = _obj(
    {"by": STR, "at": NUM, "url": STR, "signature": SIGNATURE},
    description="The accepting member's signature over the shop's domain, URL, key and time.",
)
MEMBER = _obj(
    {
        "domain": {"type": "string", "minLength": 1, "maxLength": 253},
        "agent_url": {"type": "string", "minLength": 1, "maxLength": 512},
        "public_key": {"type": "string", "minLength": 1, "description": "raw Ed25519, base64"},
        "state": {"enum": ["active", "paused", "left"]},
        "changed_at": NUM,
        "fingerprint": STR,
        "proof": {**SIGNATURE, "description": "the member's own signature over its statement"},
        "admission": _null(ADMISSION),
    },
    optional=("state", "changed_at", "fingerprint", "proof", "admission"),
)
DESCRIBE = _obj({"domain": STR, "agent_url": STR, "public_key": STR, "fingerprint": STR})
COUNT = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
RULE = _obj(  # null, like leaving a rule out: no such rule
    {
        "buffer": _null(COUNT),
        "percent": _null({"type": "number", "minimum": 0, "maximum": 100}),
        "plus": _null(COUNT),
        "max": _null(COUNT),
    },
    optional=("buffer", "percent", "plus", "max"),
    additionalProperties=False,
)
SHOP_RULES = {
    **RULE,
    "properties": {**RULE["properties"], "skus": {"type": "object", "additionalProperties": RULE}},
    "description": "buffer, then percent (+ plus), then max; `skus` overrides by SKU or glob",
}
PRIORITY = _null(_obj({"shop": STR, "at_most": COUNT}, additionalProperties=False))
RULES_RECORD = _obj(
    {"subject": STR, "body": {"type": "object"}, "changed_at": NUM, "by": STR, "proof": SIGNATURE},
    description="Rules about a shop (`subject` its domain, stated by itself) or the group "
    '(`subject` "group": a priority rule, stated by any member), signed by `by`.',
)

SCHEMAS: dict[str, Schema] = {
    "Error": _obj(
        {"error": STR, "message": STR},
        additionalProperties=False,
        description="Every 4xx/5xx answer: a machine-readable code and a human sentence.",
    ),
    "Status": _obj(
        {
            "domain": STR,
            "channel": STR,
            "public_url": STR,
            "version": STR,
            "epoch": STR,
            "fingerprint": STR,
            "uptime": NUM,
            "items": INT,
            "excluded": INT,
            "skus": INT,
            "events": {**INT, "description": "events held (compaction folds the rest)"},
            "compacted": {**INT, "description": "events folded into the pools since start"},
            "vector": _list(_obj({"origin": STR, "epoch": STR, "seq": INT})),
            "pending": _obj({"reads": INT, "skus": INT, "busy": INT, "writes": INT}),
            "idle": BOOL,
            "ready": BOOL,
            "last_reconcile": _null(NUM),
            "stats": {"type": "object", "additionalProperties": INT},
            "paused": BOOL,
            "sync_mode": {"enum": ["running", "paused", "importing", "maintenance"]},
            "import": _obj({"state": STR, "done": INT, "total": INT}),
            "maintenance": BOOL,
            "alerts": _list(_ref("Alert"), description="open at the last look (every 5 s)"),
        }
    ),
    "LogEntry": _obj(
        {
            "id": INT,
            "at": NUM,
            "kind": STR,
            "sku": _null(STR),
            "peer": _null(STR),
            "before": _null(INT),
            "delta": _null(INT),
            "after": _null(INT),
            "message": STR,
        }
    ),
    "Pool": _obj(
        {
            "sku": STR,
            "pool": _null(INT),
            "published": _null(INT),
            "target": {
                **_null(INT),
                "description": "what this shop should publish, by its stock rules",
            },
            "item_id": _null(STR),
            "title": _null(STR),
            "updated_at": _null(NUM),
            "bundle": {
                **_list(COMPONENT),
                "description": "a bundle's components (no pool of its own: `target` is the "
                "whole bundles they allow)",
            },
            "location": {
                **STR,
                "description": "a listing at one of the shop's locations (`sku` is the SKU): "
                "its `pool` is the sum of the warehouses it sells from",
            },
            "sells_from": {**_list(STR), "description": "the location's warehouses, in order"},
            "warehouse": {
                **STR,
                "description": "a warehouse's count of the SKU (`sku` is the SKU), not sold "
                "from this shop's primary location alone",
            },
        },
        optional=("bundle", "location", "sells_from", "warehouse"),
    ),
    "Alert": _obj(
        {
            "kind": {"type": "string", "enum": list(ALERT_KINDS)},
            "subject": {**STR, "description": "the SKU, the peer's domain, or empty"},
            "message": STR,
            "link": {**STR, "description": "the admin page that explains it"},
            "first_seen": {**NUM, "description": "Unix time the condition was first seen"},
        }
    ),
    "ShopDecision": _obj(
        {"shop": STR, "publishes": INT, "why": STR, "rules": STR, "override": _null(STR)},
        description="what one member publishes of a SKU, the rule that decided, its rules",
    ),
    "Activity": _obj(
        {
            "hours": {**INT, "description": "the window asked for"},
            "since": {**NUM, "description": "Unix time the window's first minute starts"},
            "now": NUM,
            "latency_since": {
                **NUM,
                "description": "Unix time the latencies go back to: they are kept in memory, "
                "so the agent's start, or 6 hours ago when it has run longer",
            },
            "totals": _obj(
                {
                    "local": INT,
                    "received": INT,
                    "latency_events": INT,
                    "latency_p50_ms": _null(NUM),
                    "latency_max_ms": _null(NUM),
                },
                description="the same figures over the whole window",
            ),
            "minutes": _list(
                _obj(
                    {
                        "at": {**NUM, "description": "Unix time the minute starts"},
                        "local": {**INT, "description": "changes seen at this shop"},
                        "received": {**INT, "description": "events received from peers"},
                        "latency_p50_ms": _null(NUM),
                        "latency_max_ms": _null(NUM),
                    }
                ),
                description="oldest first; a minute with nothing in it is left out",
            ),
        }
    ),
    "Account": _obj(
        {
            "sku": STR,
            "pool": _null(INT),
            "base": _null(
                _obj(
                    {"shop": STR, "count": INT, "created": _null(NUM)},
                    description="the count where the SKU was created first, and where",
                )
            ),
            "changes": _list(
                _obj({"shop": STR, "sum": INT, "events": INT}),
                description="per shop: the sum of its changes held here, and how many",
            ),
            "earlier": {
                **INT,
                "description": "changes folded in before this agent held their events "
                "(the counts a joiner took over in its snapshot)",
            },
            "recent": _list(
                _obj(
                    {
                        "shop": STR,
                        "seq": INT64,
                        "at": NUM,
                        "delta": _null(INT),
                        "count": _null(INT),
                        "what": STR,
                        "cause": STR,
                        "in_words": STR,
                    }
                ),
                description="the latest events, newest first",
            ),
            "shops": _list(
                _ref("ShopDecision"),
                description="what each member shows of the pool under its rules, and why",
            ),
            "adds_up": {**BOOL, "description": "base + every change + earlier = pool"},
            "history": _list(
                _obj({"at": NUM, "pool": INT}),
                description="the pool after each of the latest 500 events, oldest first, "
                "worked back from the pool (so the last is the pool); when the first listed "
                "event is a change, a first point gives the pool before it",
            ),
        }
    ),
    "JoinRequest": _obj(
        {
            "domain": STR,
            "agent_url": STR,
            "fingerprint": STR,
            "received_at": NUM,
            "claims": {
                "type": "integer",
                "minimum": 1,
                "description": "requests claiming this domain: more than one, compare keys",
            },
        }
    ),
    "Peer": _obj(
        {
            "domain": STR,
            "agent_url": STR,
            "fingerprint": STR,
            "state": {"enum": ["connected", "connecting", "unreachable", "paused", "left"]},
            "last_contact": _null(NUM),
            "events_behind": INT,
            "last_error": STR,
        }
    ),
    "Preflight": _obj(
        {
            "mode": {"enum": ["join", "rejoin", "reimport"]},
            "items": INT,
            "skus_to_write": INT,
            "to_change": _list(_obj({"sku": STR, "item_id": STR, "shop": INT, "target": INT})),
            "changes_to_count": INT,
            "counted": _list(COUNTED),
            "not_synced_yet": _list(STR),
            "not_synced_yet_count": INT,
            "duplicates": _list(_obj({"sku": STR, "items": _list(ITEM)})),
            "duplicate_skus": INT,
            "no_sku": _list(ITEM),
            "no_sku_items": INT,
            "missing_here": _list(STR),
            "missing_here_count": INT,
            "only_here": _list(STR),
            "only_here_count": INT,
            "bundles": _list(STR),
            "bundles_count": INT,
            "while_out": _null({"enum": ["count", "discard"]}),
            "discarded": _list(COUNTED),
            "discarded_count": INT,
        },
        description="What an import does, SKU by SKU (`mode`: a join replaces this shop's counts "
        "with the group's; a re-import first counts this shop's changes since the agent last "
        "saw them, `counted`, then writes `to_change`; a bundle sold here is no count of its own: "
        "its changes are counted as its components', and its count written is what they "
        "allow); lists hold at most 1000 rows, counts are full.",
    ),
    "ImportProgress": _obj(
        {
            "state": {"enum": ["none", "running", "done"]},
            "phase": {"enum": ["snapshot", "writing", "done"]},
            "reason": _null(STR),
            "master": _null(STR),
            "started_at": NUM,
            "writing_started": NUM,
            "finished_at": NUM,
            "done": INT,
            "total": INT,
            "rate": NUM,
            "eta_seconds": _null(NUM),
            "dry_run_report": _null(_ref("Preflight")),
            "maintenance": BOOL,
            "snapshot": _obj(
                {"pages_done": INT, "pages": INT, "pools": INT},
                description="A join downloading the master's snapshot: pages so far.",
            ),
        },
        optional=(
            "phase",
            "reason",
            "master",
            "started_at",
            "writing_started",
            "finished_at",
            "snapshot",
        ),
    ),
    "Maintenance": _obj(
        {"on": BOOL, "auto": BOOL, "since": NUM, "storefront_closed": BOOL},
        optional=("auto", "since", "storefront_closed"),
    ),
    "Duplicates": _obj(
        {
            "duplicates": _list(_obj({"sku": STR, "items": _list(ITEM), "advice": STR})),
            "no_sku": _list(_obj({"item_id": STR, "title": STR, "advice": STR})),
            "missing_here": _list(STR),
            "only_here": _list(STR),
            "bundles_short": _list(_obj({"sku": STR, "missing": _list(STR), "advice": STR})),
        }
    ),
    "PoolRow": {
        **_tuple(STR, _null(INT), _null(NUM), _null(STR), INT),
        "description": "[sku, base, base_created, base_origin, deltas]",
    },
    "Told": _list(STR, description="domains of the members that answered"),
    "Rules": _obj(
        {
            "shop": STR,
            "rules": SHOP_RULES,
            "priority": PRIORITY,
            "shops": {"type": "object", "additionalProperties": SHOP_RULES},
        }
    ),
    "Bundle": _obj(
        {
            "sku": STR,
            "components": _list(COMPONENT),
            "set_by": STR,
            "changed_at": NUM,
            "in_use": BOOL,
            "why_not": _null(STR),
        }
    ),
    "Bundles": _obj({"bundles": _list({"$ref": "#/components/schemas/Bundle"})}),
    "Locations": _obj(
        {
            "locations": _list(_obj({"location": STR, "warehouses": _list(STR)})),
            "warehouses": _list(STR),
            "multi_location": BOOL,
            "restart_required": BOOL,
        }
    ),
    "Member": MEMBER,
    "Describe": DESCRIBE,
    "Vector": {**VECTOR, "description": "[[origin, epoch, highest gap-free seq], …]"},
    "Event": {
        **_tuple(
            {"type": "string", "minLength": 1, "description": "origin"},
            {"type": "string", "minLength": 1, "description": "epoch"},
            {"type": "integer", "minimum": 1, "description": "seq"},
            {"type": "string", "minLength": 1, "description": "sku"},
            {"type": "string", "minLength": 1, "description": "kind"},
            {"type": "integer", "description": "delta"},
            _null(INT),
            _null(NUM),
            {"type": "string", "maxLength": 200, "description": "cause"},
            NUM,
            {**SIGNATURE, "description": "the origin's signature over the event"},
        ),
        "description": "[origin, epoch, seq, sku, kind, delta, count, item_created, cause, at, "
        "proof]",
    },
}


def _json(schema: Schema, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _body(schema: Schema, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


UNAUTHORIZED = _error("No or wrong admin token (`Authorization: Bearer …`).")
BAD_JSON = _error("The body is not a JSON object, or a field is wrong.")


def _admin(
    summary: str,
    ok: Schema,
    *,
    status: tuple[str, ...] = ("200",),
    body: Schema | None = None,
    errors: dict[str, str] | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {code: _json(ok, summary) for code in status}
    responses["401"] = UNAUTHORIZED
    if body is not None:
        responses["400"] = BAD_JSON
    for code, text in (errors or {}).items():
        responses[code] = _error(text)
    op: dict[str, Any] = {"summary": summary, "tags": ["admin"], "responses": responses}
    if body is not None:
        op["requestBody"] = _body(body)
    if params:
        op["parameters"] = params
    return op


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


DOMAIN = {"name": "domain", "in": "path", "required": True, "schema": STR}
TOLD = _obj({"paused": BOOL, "told": _ref("Told")})

ADMIN_PATHS: dict[str, dict[str, Any]] = {
    "/api/status": {"get": _admin("This agent, its shop and its work queues.", _ref("Status"))},
    "/api/log": {
        "get": _admin(
            "Sync-log entries, newest first (forward from `after_id` for tailing).",
            _obj({"entries": _list(_ref("LogEntry"))}),
            errors={
                "400": "A number parameter is not a number, limit is not 1-1000, or the kind "
                "is not one the agent writes (the message lists them)."
            },
            params=[
                _query("sku", STR, "only this SKU"),
                _query("kind", _blank({"type": "string", "enum": list(KINDS)}), "only this kind"),
                _query("peer", STR, "only this peer domain"),
                _query("since", _blank(NUM), "at or after this Unix time"),
                _query("until", _blank(NUM), "at or before this Unix time"),
                _query("after_id", _blank(INT64), "forward from this id (oldest first)"),
                _query("before_id", _blank(INT64), "back from this id (newest first)"),
                _query("limit", _blank(PAGE_SIZE), "page size, 1-1000 (default 100)"),
            ],
        )
    },
    "/api/alerts": {
        "get": _admin(
            "The alerts open now (looked at afresh), oldest first, and what each kind means. "
            "An alert clears by itself when its condition no longer holds.",
            _obj(
                {
                    "alerts": _list(_ref("Alert")),
                    "kinds": {"type": "object", "additionalProperties": STR},
                }
            ),
        )
    },
    "/api/notify": {
        "get": _admin(
            "Where notifications go (secrets left out), the alert kinds each channel wants, and "
            "how many messages wait in the outbox.",
            _obj(
                {
                    "channels": _list({"enum": ["webhook", "email"]}),
                    "webhook": _null(_obj({"url": STR, "kinds": _list(STR)})),
                    "email": _null(_obj({"to": _list(STR), "kinds": _list(STR)})),
                    "pending": INT,
                }
            ),
        )
    },
    "/api/notify/test": {
        "post": _admin(
            "Send a test notification through every configured channel now.",
            _obj({"results": _list(_obj({"channel": STR, "ok": BOOL, "detail": STR}))}),
            errors={"409": "No notification channel is configured."},
        )
    },
    "/api/explain": {
        "get": _admin(
            "Why a SKU's count is what it is: the pool as base + each shop's changes, the "
            "latest events in words, and what each member shows under its rules.",
            _ref("Account"),
            errors={"400": "sku is missing or too long.", "404": "No shop told of this SKU."},
            params=[_query("sku", STR, "the SKU (required)")],
        )
    },
    "/api/activity": {
        "get": _admin(
            "Per minute of the last hours: this shop's changes (sync log `change` rows), the "
            "events received from peers (`batch_received` rows), and the p50 and max of their "
            "propagation latency, from the origin's change to applied here (in memory: since "
            "the agent started).",
            _ref("Activity"),
            errors={"400": "hours is not an integer from 1 to 24."},
            params=[_query("hours", _blank({**INT, "minimum": 1, "maximum": 24}), "default 3")],
        )
    },
    "/api/pools": {
        "get": _admin(
            "Per SKU (in SKU order, or the latest changed first): the group's pool, the count "
            "published in this shop, what its rules say it should publish, the item and its "
            "title. `total` counts every SKU that matches, whatever the page.",
            _obj({"pools": _list(_ref("Pool")), "total": INT64}),
            errors={"400": "offset or limit is not an integer or out of range, or a bad sort."},
            params=[
                _query("sku", STR, "only this SKU"),
                _query("q", STR, "only SKUs containing this (any case)"),
                _query("sort", _blank({"enum": ["sku", "changed"]}), "order (default sku)"),
                _query(
                    "mismatch",
                    FLAG,
                    "1: only SKUs whose shop shows another count than its rules say",
                ),
                _query("offset", _blank(INT64), "skip this many matching SKUs (default 0)"),
                _query("limit", _blank(INT64), "page size, 1-1000 (default: all)"),
            ],
        )
    },
    "/api/reconcile": {
        "post": _admin(
            "Start a full catalogue reconciliation now.", _obj({"ok": BOOL}), status=("202",)
        )
    },
    "/api/join": {
        "post": _admin(
            "Send a join request to another shop's agent (agent URL or shop domain).",
            _obj(
                {
                    "status": {"const": "pending"},
                    "domain": STR,
                    "agent_url": STR,
                    "fingerprint": STR,
                }
            ),
            status=("202",),
            body=_obj(
                {
                    "target": {"type": "string", "pattern": r"\S"},
                    "while_out": {
                        "enum": ["count", "discard"],
                        "description": "Joining the group this shop left before: count the "
                        "changes it made while out into the group's counts (default), or "
                        "discard them.",
                    },
                },
                optional=("while_out",),
            ),
            errors={
                "400": "The target or `while_out` is malformed.",
                "409": "This shop is already in a group: leave it first.",
                "502": "The target could not be found, reached, or refused the request.",
            },
        )
    },
    "/api/requests": {
        "get": _admin("Pending join requests.", _obj({"requests": _list(_ref("JoinRequest"))}))
    },
    "/api/requests/{domain}/accept": {
        "post": _admin(
            "Accept a pending join request: call the joiner back, add it, introduce it. With "
            "several requests claiming the domain, `fingerprint` says which.",
            _obj({"accepted": STR, "fingerprint": STR, "introduced": _list(STR)}),
            errors={
                "404": "No pending join request from that domain (with that fingerprint).",
                "409": "Several requests claim the domain: send the fingerprint "
                "(`ambiguous_request`).",
                "502": "The joiner did not confirm at the URL it claimed, with its key.",
            },
            params=[DOMAIN],
            body=_obj({"fingerprint": STR}, optional=("fingerprint",)),
        )
    },
    "/api/requests/{domain}/reject": {
        "post": _admin(
            "Reject a pending join request (the one with `fingerprint`, or all of the domain).",
            _obj({"rejected": STR, "fingerprints": _list(STR)}),
            errors={"404": "No pending join request from that domain."},
            params=[DOMAIN],
            body=_obj({"fingerprint": STR}, optional=("fingerprint",)),
        )
    },
    "/api/peers": {
        "get": _admin(
            "Every peer: state, last contact, events behind.", _obj({"peers": _list(_ref("Peer"))})
        )
    },
    "/api/leave": {
        "post": _admin(
            "Leave the group (the other members are told).",
            _obj({"left": BOOL, "told": _ref("Told")}),
            errors={"409": "This shop is not in a group."},
        )
    },
    "/api/sessions/revoke": {
        "post": _admin(
            "Log out every admin-page session issued until now, also across restarts.",
            _obj({"ended_before": NUM}),
        )
    },
    "/api/pause": {"post": _admin("Pause sync with the group.", TOLD)},
    "/api/resume": {"post": _admin("Resume sync with the group.", TOLD)},
    "/api/duplicates": {
        "get": _admin("Duplicates, SKU-less items, SKUs missing here.", _ref("Duplicates"))
    },
    "/api/import": {
        "get": _admin(
            "Progress of the current or last import.",
            _ref("ImportProgress"),
            errors={"400": "report is not 1 or 0."},
            params=[_query("report", FLAG, "0: leave the pre-flight report out (default 1)")],
        ),
        "post": _admin(
            "Start an import of the group's counts into this shop (202), or only report (200).",
            _obj({"dry_run": BOOL, "report": _ref("Preflight")}),
            status=("200", "202"),
            body=_obj({"dry_run": BOOL}, optional=("dry_run",)),
            errors={"409": "Not in a group, or an import is already running."},
        ),
    },
    "/api/maintenance": {
        "get": _admin("Maintenance mode.", _ref("Maintenance")),
        "post": _admin(
            "Turn maintenance mode on or off.",
            _ref("Maintenance"),
            body=_obj({"on": BOOL}),
            errors={"409": "An import is running; it ends maintenance itself."},
        ),
    },
    "/api/resync": {
        "post": _admin(
            "Re-read and re-write these SKUs (or all of them).",
            _obj({"queued": _list(STR), "unknown": _list(STR)}),
            body={
                "anyOf": [
                    _obj({"skus": _list(STR, minItems=1)}),
                    _obj({"all": {"const": True}}),
                ]
            },
        )
    },
    "/api/rules": {
        "get": _admin(
            "This shop's stock rules, every shop's as this agent knows them, the group's rule.",
            _ref("Rules"),
        ),
        "post": _admin(
            "Replace this shop's rules: stored in the config's [rules], applied at once, told "
            "to every member.",
            {**_ref("Rules"), "properties": {"told": _ref("Told")}},
            body=_obj({"rules": SHOP_RULES}),
            errors={"400": "A rule is malformed or out of range, or a pattern matches no SKU."},
        ),
    },
    "/api/rules/priority": {
        "post": _admin(
            "Set the group's rule (a priority shop while a pool is at most N), or none.",
            {**_ref("Rules"), "properties": {"told": _ref("Told")}},
            body=_obj({"priority": PRIORITY}),
            errors={"400": "The priority shop is not a member, or at_most is not a count."},
        )
    },
    "/api/bundles": {
        "get": _admin("The group's bundles: each a SKU sold as a set of others.", _ref("Bundles")),
        "post": _admin(
            "Define or redefine a bundle for every member: what a shop publishes for it is the "
            "whole sets its components allow; a sale of it takes its components.",
            {**_ref("Bundles"), "properties": {"told": _ref("Told")}},
            body=_obj({"sku": SKU, "components": _list(COMPONENT, minItems=1, maxItems=50)}),
            errors={
                "400": "A component is unknown to the group, is a bundle, or is named twice; "
                "the bundle's SKU is some bundle's component; or a quantity is not a count."
            },
        ),
    },
    "/api/bundles/{sku}": {
        "delete": _admin(
            "Stop selling a SKU as a bundle, in every member.",
            {**_ref("Bundles"), "properties": {"told": _ref("Told")}},
            errors={"404": "The SKU is not a bundle."},
            params=[{"name": "sku", "in": "path", "required": True, "schema": SKU}],
        )
    },
    "/api/locations": {
        "get": _admin(
            "This shop's locations (\"primary\": the channel's own), each with the warehouses "
            "it sells from, in order.",
            _ref("Locations"),
        ),
        "post": _admin(
            "Link a location to warehouses (`[]` unlinks it). A dry run changes nothing and "
            "says what each listing there would show; else the config's [locations] is "
            "rewritten and, for a location already synced, applied at once.",
            {
                **_ref("Locations"),
                "properties": {
                    "dry_run": BOOL,
                    "applied": BOOL,
                    "preview": _obj(
                        {
                            "listings": INT,
                            "changes": INT,
                            "rows": _list(
                                _obj(
                                    {
                                        "sku": STR,
                                        "shows": _null(INT),
                                        "would_show": _null(INT),
                                    }
                                )
                            ),
                        }
                    ),
                },
            },
            body=_obj(
                {
                    "location": {"type": "string", "minLength": 1, "maxLength": 255},
                    "warehouses": _list(STR, maxItems=20),
                    "dry_run": BOOL,
                },
                optional=("dry_run",),
            ),
            errors={
                "400": "A warehouse name is malformed or named twice, the primary location is "
                "left without one, or the channel syncs only its own location.",
                "404": "The location to unlink is not linked.",
            },
        ),
    },
    "/api/rules/test": {
        "get": _admin(
            "What each member would publish of a SKU at a pool (default: its pool now), and "
            "which rule decided.",
            _obj(
                {
                    "sku": STR,
                    "pool": INT,
                    "shops": _list(_ref("ShopDecision")),
                }
            ),
            errors={"400": "No sku, a pool that is not an integer, or a SKU without a pool."},
            params=[
                {"name": "sku", "in": "query", "required": True, "schema": STR},
                _query("pool", _blank(INT), "the pool to decide for (default: the SKU's now)"),
            ],
        )
    },
    "/api/openapi.json": {
        "get": _admin("This document.", {"type": "object", "required": ["openapi", "paths"]})
    },
}

SIGNATURE_HEADERS = [
    {
        "name": "Signature-Input",
        "in": "header",
        "required": True,
        "schema": STR,
        "description": 'RFC 9421: sig1=("@method" "@path" "@query" "content-digest" '
        '"shopsync-audience");created=…;nonce="…";keyid="SHA256:…";alg="ed25519"',
    },
    {
        "name": "Shopsync-Audience",
        "in": "header",
        "required": True,
        "schema": STR,
        "description": "The receiving agent's key fingerprint: no other agent accepts it.",
    },
    {
        "name": "Signature",
        "in": "header",
        "required": True,
        "schema": STR,
        "description": "RFC 9421: sig1=:<base64 Ed25519 signature>:",
    },
    {
        "name": "Content-Digest",
        "in": "header",
        "required": True,
        "schema": STR,
        "description": "RFC 9530: sha-256=:<base64 SHA-256 of the body>:",
    },
]


def _peer(
    summary: str,
    body: Schema,
    ok: Schema,
    *,
    status: str = "200",
    errors: dict[str, str] | None = None,
) -> dict[str, Any]:
    responses = {
        status: _json(ok, summary),
        "400": _error("The body is not JSON, or a field is malformed."),
        "401": _error(
            "Missing, malformed, stale, replayed or wrong signature, another audience, or an "
            "unknown key (`missing_signature`, `malformed_signature`, `wrong_audience`, "
            "`digest_mismatch`, `stale_timestamp`, `unknown_key`, `bad_signature`, "
            "`replayed_nonce`)."
        ),
        "403": _error(
            "The signing key is not a member of this group (`not_a_member`), or what it "
            "says is not its to say (`events_refused`, `not_admitted`, `not_own_record`, "
            "`bad_statement`)."
        ),
        "408": _error("The body did not arrive in time (`body_timeout`)."),
        "413": _error("The body is larger than this path takes (`body_too_large`)."),
        "503": _json(
            _ref("Error"),
            "Sync is paused, the shop is importing, or the nonce cache is full: retry.",
            headers={"Retry-After": {"schema": STR}},
        ),
    }
    for code, text in (errors or {}).items():
        responses[code] = _error(text)
    return {
        "post": {
            "summary": summary,
            "tags": ["peer"],
            "security": [],
            "parameters": SIGNATURE_HEADERS,
            "requestBody": _body(body),
            "responses": responses,
        }
    }


PEER_PATHS: dict[str, Any] = {
    "/peer/join": _peer(
        "A join request, self-signed with the key it carries; stored as pending.",
        _obj(
            {
                **MEMBER["properties"],
                "nonce": {"type": "string", "minLength": 16, "maxLength": 128},
            },
            optional=("state", "changed_at", "fingerprint"),
        ),
        _obj({"status": {"const": "pending"}, "domain": STR}),
        status="202",
        errors={
            "409": "Already a member, or the sender has this agent's domain.",
            "429": "Too many join requests are waiting, or come from this address.",
        },
    ),
    "/peer/welcome": _peer(
        "The master accepted: the nonce of the request, the shop's admission signed by the "
        "master, and the group's members.",
        _obj(
            {"nonce": STR, "members": _list(_ref("Member")), "admission": ADMISSION},
            optional=("members", "admission"),
        ),
        _obj(
            {
                "confirmed": {"const": True},
                **DESCRIBE["properties"],
                "member": _ref("Member"),
                "confirmation": {
                    **SIGNATURE,
                    "description": "the joiner's signature over the nonce, the master's key "
                    "id and its own domain and key",
                },
            }
        ),
        errors={
            "409": "This shop joined another group meanwhile.",
            "410": "The join request expired.",
        },
    ),
    "/peer/introduce": _peer(
        "A member introduces a newcomer it admitted (the record carries the admission).",
        _obj({"member": _ref("Member")}),
        _obj({"ok": BOOL}),
    ),
    "/peer/state": _peer(
        "The sender's own record, with its new state, signed by itself.",
        _obj({"member": _ref("Member")}),
        _obj({"ok": BOOL}),
    ),
    "/peer/rules": _peer(
        "Rules records a member's admin set (its own shop's, or the group's), signed by it.",
        _obj({"records": _list(RULES_RECORD)}),
        _obj({"ok": BOOL}),
    ),
    "/peer/events": _peer(
        "A batch of the sender's events (at least once; the inbox de-duplicates).",
        _obj({"events": _list(_ref("Event"), maxItems=5000)}),
        _obj({"vector": _ref("Vector")}),
    ),
    "/peer/pull": _peer(
        "Events beyond the sender's vector, from any origin (but for streams compacted beyond "
        "it: `folded`), and the member list. The sender may send its own record along.",
        _obj({"have": _ref("Vector"), "member": _ref("Member")}, optional=("have", "member")),
        _obj(
            {
                "events": _list(_ref("Event")),
                "more": BOOL,
                "vector": _ref("Vector"),
                "folded": {
                    **_ref("Vector"),
                    "description": "streams this agent compacted beyond the sender's vector, "
                    "up to the seq given: their events are not sent from here (an answer "
                    "without it: nothing folded)",
                },
                "members": _list(_ref("Member")),
                "rules": _list(RULES_RECORD),
            }
        ),
    ),
    "/peer/snapshot": _peer(
        "A snapshot for a joiner: pools, vector and held events, read in one transaction, the "
        'member list and the rules records (stock rules, bundles). With `{"paged": true}` the '
        "pools are spooled and the answer is the head (`snapshot` id, `pages`, `pool_count`), "
        "the pools then taken a page at a time (`/peer/snapshot_page`); with `{}` (releases "
        "before paging) every pool in the answer.",
        _obj({"paged": BOOL}, optional=("paged",)),
        {
            "oneOf": [
                _obj(
                    {
                        "snapshot": STR,
                        "pages": INT,
                        "pool_count": INT,
                        "vector": _ref("Vector"),
                        "extra_events": _list(_ref("Event")),
                        "members": _list(_ref("Member")),
                        "rules": _list(RULES_RECORD),
                    }
                ),
                _obj(
                    {
                        "pools": _list(_ref("PoolRow")),
                        "vector": _ref("Vector"),
                        "extra_events": _list(_ref("Event")),
                        "members": _list(_ref("Member")),
                        "rules": _list(RULES_RECORD),
                    }
                ),
            ]
        },
    ),
    "/peer/snapshot_page": _peer(
        "Page `page` (from 0) of a spooled snapshot's pools, in SKU order; 410 `snapshot_gone` "
        "once the master no longer keeps it (restarted, or an hour passed): ask for a new one.",
        _obj({"snapshot": STR, "page": INT}),
        _obj({"snapshot": STR, "page": INT, "pools": _list(_ref("PoolRow"))}),
        errors={"410": "That snapshot is no longer kept here (`snapshot_gone`)."},
    ),
}

WELL_KNOWN = {
    "/.well-known/shopsync": {
        "get": {
            "summary": "Who this agent is, for joiners resolving a shop domain.",
            "tags": ["peer"],
            "security": [],
            "responses": {"200": _json(_ref("Describe"), "This agent's identity.")},
        }
    }
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "shopsync agent",
        "version": __version__,
        "description": "`/api`: admin JSON API (bearer admin token). `/peer`: signed "
        "agent-to-agent calls (Ed25519, RFC 9421 HTTP Message Signatures with an RFC 9530 "
        'Content-Digest). Every error answer is `{"error", "message"}`.',
    },
    "tags": [
        {"name": "admin", "description": "For the CLI, the admin pages and scripts."},
        {"name": "peer", "description": "Between the agents of one group."},
    ],
    "security": [{"admin": []}],
    "paths": {**ADMIN_PATHS, **PEER_PATHS, **WELL_KNOWN},
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "admin": {
                "type": "http",
                "scheme": "bearer",
                "description": "the admin token `shopsync init` printed",
            }
        },
    },
}


def document() -> dict[str, Any]:
    """A deep copy of the document, for callers that may change it."""
    return copy.deepcopy(DOCUMENT)


async def serve(request: web.Request) -> web.Response:
    """`GET /api/openapi.json` (admin token, like the rest of `/api`)."""
    return web.json_response(DOCUMENT)
