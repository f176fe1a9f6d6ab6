"""HTTP plumbing of the SHOPLINE emulator: ids, times, errors, query parsing, link pagination."""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = [
    "API_VERSION",
    "ID_BASE",
    "TZ",
    "VERSION",
    "ApiError",
    "id_list",
    "integer_field",
    "iso",
    "json_body",
    "kit_number",
    "limit_param",
    "paginated",
    "shopline_id",
    "time_filter",
]

API_VERSION = "v20260601"
ID_BASE = 10**18  # kit ids are small ints; SHOPLINE's are 19-26 digit strings
TZ = datetime.timezone(datetime.timedelta(hours=8))
VERSION = re.compile(r"^v\d{8}$")


def shopline_id(number: int) -> str:
    """A kit integer id as a SHOPLINE id string."""
    return str(ID_BASE + number)


def kit_number(value: Any) -> int | None:
    """The kit integer behind a SHOPLINE id string; None when it cannot be one of ours."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 64:
        number = int(value) - ID_BASE
        return number if number >= 0 else None
    return None


def iso(epoch: float) -> str:
    """Epoch seconds as SHOPLINE prints times: whole seconds, +08:00."""
    return datetime.datetime.fromtimestamp(int(epoch // 1), tz=TZ).isoformat()


class ApiError(Exception):
    """An API answer of `status` with `{"errors": errors}`."""

    def __init__(self, status: int, errors: Any) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = errors


def time_filter(filters: dict[str, str], name: str) -> float | None:
    """The ISO 8601 filter `name` as epoch seconds, None if absent (400 if malformed)."""
    raw = filters.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=TZ)
    return moment.timestamp()


def limit_param(request: web.Request, fallback: int = 50, maximum: int = 250) -> int:
    """The `limit` query parameter: 1 to the endpoint's `maximum` (250 for products and
    variants, 100 for orders, as SHOPLINE documents each)."""
    raw = request.query.get("limit")
    if raw is None:
        return min(fallback, maximum)
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ApiError(400, f"limit must be an integer from 1 to {maximum}")
    return int(raw)


def id_list(request: web.Request, name: str, maximum: int) -> list[str] | None:
    """A comma-separated id parameter, None if absent; 400 past `maximum` or if not digits."""
    raw = request.query.get(name)
    if raw is None or not raw.strip():
        return None
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if any(not part.isdigit() for part in ids):
        raise ApiError(400, f"{name} must be comma-separated ids")
    if len(ids) > maximum:
        raise ApiError(400, f"{name} takes at most {maximum} ids")
    return ids


async def json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a write's body; 400 on a wrong Content-Type or malformed JSON."""
    if request.content_type != "application/json":
        raise ApiError(400, "Content-Type must be application/json")
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Invalid JSON in request body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def paginated(
    request: web.Request,
    key: str,
    filter_names: tuple[str, ...],
    rows_for: Callable[[dict[str, str]], list[tuple[int, Any]]],
    *,
    maximum: int = 250,
) -> web.Response:
    """A paginated list answer: rows by ascending id, a `link` header unless last page.

    With `page_info`, the filters come from the cursor and the query's are ignored, as
    SHOPLINE documents; only `limit` may change.
    """
    raw = request.query.get("page_info")
    if raw is None:
        filters = {name: request.query[name] for name in filter_names if name in request.query}
        cursor, direction, limit = None, "next", limit_param(request, maximum=maximum)
    else:
        try:
            state = json.loads(base64.urlsafe_b64decode(raw.encode()))
            cursor, direction = int(state["sinceId"]), str(state["direction"])
            filters = {str(k): str(v) for k, v in dict(state["filters"]).items()}
            fallback = int(state["limit"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiError(400, "page_info is invalid") from None
        limit = limit_param(request, fallback, maximum)
    rows = sorted(rows_for(filters), key=lambda row: row[0])
    if cursor is None:
        page = rows[:limit]
    elif direction == "next":
        page = [row for row in rows if row[0] > cursor][:limit]
    else:
        page = [row for row in rows if row[0] < cursor][-limit:]
    response = web.json_response({key: [body for _, body in page]})
    if page and rows[-1][0] > page[-1][0]:
        url = _page_url(request, page[-1][0], "next", limit, filters)
        links = [f'<{url}>; rel="next"']
        if rows[0][0] < page[0][0]:
            url = _page_url(request, page[0][0], "prev", limit, filters)
            links.append(f'<{url}>; rel="previous"')
        response.headers["link"] = ", ".join(links)
    return response


def _page_url(
    request: web.Request, cursor: int, direction: str, limit: int, filters: dict[str, str]
) -> str:
    state = {"sinceId": cursor, "direction": direction, "limit": limit, "filters": filters}
    page_info = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
    return str(request.url.with_query({"limit": str(limit), "page_info": page_info}))


def integer_field(body: dict[str, Any], name: str) -> int:
    """An integer field of a body (not a bool, not a string); 400 otherwise."""
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, f"{name} must be an integer")
    return value
