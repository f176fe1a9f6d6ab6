"""Bulk query operations of the Shopify emulator: run a query over the store, serve JSONL.

As on Shopify, a bulk query runs beside the shop, not in its way: the first poll starts it in
a thread of its own, and the shop's API and webhooks go on meanwhile (at 100,000 variants the
query takes graphql-core tens of seconds, during which the event loop would otherwise stop).
A poll waits a moment for it (`SETTLE`), so a small shop's operation completes at the second
poll as it always did.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from graphql import (
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute_sync,
    parse,
    validate,
)

from plugins.shopify.emulator_graph import QueryRoot, RequestContext, gid, iso
from plugins.shopify.schema import schema_for

__all__ = ["BulkOperation", "BulkRunner"]

SETTLE = 0.05  # seconds a poll waits for a running operation to finish
ATTEMPTS = 3  # runs of one query: the shop may change under it (a product added mid-read)

Result = tuple[list[bytes], int] | None  # the JSONL lines and root count; None: failed


@dataclasses.dataclass(slots=True)
class BulkOperation:
    """One bulk query: CREATED, then RUNNING at the first poll, COMPLETED at the next."""

    id: int
    query: str
    version: str
    base_url: str
    created_at: float
    status: str = "CREATED"
    lines: list[bytes] = dataclasses.field(default_factory=list)
    root_count: int = 0
    completed_at: float | None = None
    error_code: str | None = None

    @property
    def url(self) -> str | None:
        """Where the JSONL result is served (null while running and for an empty result)."""
        if self.status != "COMPLETED" or not self.lines:
            return None
        return f"{self.base_url}/_emulator/bulk/{self.id}.jsonl"

    def as_node(self) -> dict[str, Any]:
        """The BulkOperation object."""
        return {
            "__typename": "BulkOperation",
            "id": gid("BulkOperation", self.id),
            "status": self.status,
            "type": "QUERY",
            "query": self.query,
            "url": self.url,
            "partialDataUrl": None,
            "objectCount": str(len(self.lines)),
            "rootObjectCount": str(self.root_count),
            "fileSize": str(sum(len(line) + 1 for line in self.lines)) if self.url else None,
            "errorCode": self.error_code,
            "createdAt": iso(self.created_at),
            "completedAt": iso(self.completed_at) if self.completed_at else None,
        }


class BulkRunner:
    """Runs `bulkOperationRunQuery` documents; one query operation at a time per shop."""

    def __init__(self, root: QueryRoot, clock: Callable[[], float]) -> None:
        self.root = root
        self.clock = clock
        self.operations: dict[int, BulkOperation] = {}
        self._ids = itertools.count(1)
        self._running: dict[int, Future[Result]] = {}

    def start(self, query: str, version: str, base_url: str) -> dict[str, Any]:
        """The `bulkOperationRunQuery` payload: a new operation, or userErrors."""
        running = self.current(advance=False)
        if running is not None and running.status in ("CREATED", "RUNNING"):
            return _user_error(
                f"A bulk query operation for this app and shop is already in progress: "
                f"{gid('BulkOperation', running.id)}.",
                "OPERATION_IN_PROGRESS",
            )
        problem = self._check(query, version)
        if problem:
            return _user_error(f"Invalid bulk query: {problem}", "INVALID", field=["query"])
        op = BulkOperation(next(self._ids), query, version, base_url, self.clock())
        self.operations[op.id] = op
        return {"bulkOperation": op.as_node(), "userErrors": []}

    def current(self, *, advance: bool) -> BulkOperation | None:
        """The newest operation; with `advance`, a poll moves it one step towards COMPLETED."""
        if not self.operations:
            return None
        op = self.operations[max(self.operations)]
        if advance and op.status == "CREATED":
            op.status = "RUNNING"
            self._launch(op)
        elif advance and op.status == "RUNNING":
            self._collect(op)
        return op

    def jsonl(self, op_id: int) -> bytes | None:
        """The result file of a completed operation."""
        op = self.operations.get(op_id)
        if op is None or op.status != "COMPLETED":
            return None
        return b"".join(line + b"\n" for line in op.lines)

    def _check(self, query: str, version: str) -> str | None:
        try:
            document = parse(query)
        except GraphQLError as exc:
            return exc.message
        errors = validate(schema_for(version), document)
        if errors:
            return errors[0].message
        ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(ops) != 1 or ops[0].operation != OperationType.QUERY:
            return "a bulk query must be exactly one query operation"
        if "Connection" not in query and "edges" not in query and "nodes" not in query:
            return "a bulk query must contain at least one connection"
        return None

    def _launch(self, op: BulkOperation) -> None:
        future: Future[Result] = Future()

        def work() -> None:
            try:
                future.set_result(self._execute(op))
            except BaseException as exc:  # handed to the poll that collects it
                future.set_exception(exc)

        # a daemon: an emulator stopped mid-query exits at once
        threading.Thread(target=work, name=f"bulk-{op.id}", daemon=True).start()
        self._running[op.id] = future

    def _collect(self, op: BulkOperation) -> None:
        future = self._running.get(op.id)
        if future is None:  # not launched here (cannot happen through `current`)
            self._launch(op)
            return
        try:
            result = future.result(timeout=SETTLE)
        except TimeoutError:
            return  # still running
        except Exception:
            result = None
        del self._running[op.id]
        op.completed_at = self.clock()
        if result is None:
            op.status, op.error_code = "FAILED", "INTERNAL_SERVER_ERROR"
            return
        op.lines, op.root_count = result
        op.status = "COMPLETED"

    def _execute(self, op: BulkOperation) -> Result:
        """Run the query over the store (in the operation's thread) into JSONL lines."""
        document = parse(op.query)
        for attempt in range(ATTEMPTS):
            context = RequestContext(op.version, op.base_url, bulk=True)
            try:
                result = execute_sync(
                    schema_for(op.version), document, root_value=self.root, context_value=context
                )
            except RuntimeError:  # a dict of the store changed size under the read
                if attempt + 1 == ATTEMPTS:
                    raise
                continue
            if result.errors or result.data is None:
                return None
            rows: list[dict[str, Any]] = []
            roots = 0
            for value in result.data.values():
                for node in _connection_nodes(value):
                    roots += 1
                    _emit(node, None, rows)
            return [json.dumps(row, separators=(",", ":")).encode() for row in rows], roots
        return None


def _user_error(message: str, code: str, *, field: list[str] | None = None) -> dict[str, Any]:
    return {
        "bulkOperation": None,
        "userErrors": [{"field": field, "message": message, "code": code}],
    }


def _is_connection(value: Any) -> bool:
    return isinstance(value, dict) and ("edges" in value or "nodes" in value)


def _connection_nodes(value: Any) -> list[dict[str, Any]]:
    if not _is_connection(value):
        return []
    if "edges" in value:
        return [edge["node"] for edge in value["edges"] if edge.get("node") is not None]
    return [node for node in value["nodes"] if node is not None]


def _emit(node: dict[str, Any], parent_id: str | None, rows: list[dict[str, Any]]) -> None:
    """One JSONL line per node: non-connection children inline, connections as own lines."""
    row = {k: v for k, v in node.items() if not _is_connection(v)}
    if parent_id is not None:
        row["__parentId"] = parent_id
    rows.append(row)
    for value in node.values():
        for child in _connection_nodes(value):
            _emit(child, node.get("id"), rows)
