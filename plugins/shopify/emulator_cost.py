"""Query cost for the Shopify emulator: requested cost before execution, actual cost after.

The model (a simplification of Shopify's "calculated query cost", documented so that tests and
the plugin's pacing can rely on it):

- scalar and enum fields cost 0, and so do introspection fields (``__typename``...);
- an object field, or a list of objects that is not a connection, costs 1 (once, not per
  element) plus the cost of its selection;
- a connection field (a type named ``…Connection``) costs ``2 + n x (1 + node selection)``,
  where ``n`` is ``first`` or ``last`` (10 when neither is given) and the node selection is the
  one under ``nodes`` or ``edges { node }`` (the larger if both are asked); ``pageInfo`` and
  ``cursor`` are covered by the 2;
- ``nodes(ids:)`` costs ``len(ids) x (1 + selection)``;
- every mutation field costs a flat 10, its selection is free.

The actual cost is the same walk over the result: connections and ``nodes`` count the elements
really returned, null objects cost nothing. It never exceeds the requested cost; the difference
is refunded to the bucket. Input lists longer than 250 and ``first``/``last`` above 250 are
refused before anything is charged, as Shopify does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    is_leaf_type,
)
from graphql.execution.values import get_argument_values

__all__ = ["MAX_INPUT_SIZE", "MAX_PAGE_SIZE", "MUTATION_COST", "CostModel", "LimitExceeded"]

MUTATION_COST = 10
MAX_PAGE_SIZE = 250
MAX_INPUT_SIZE = 250
DEFAULT_PAGE_SIZE = 10

ParentType = GraphQLObjectType | GraphQLInterfaceType


class LimitExceeded(Exception):
    """A page size or an input list is over Shopify's limit; `errors` is the reply's list."""

    def __init__(self, message: str, code: str, **extensions: Any) -> None:
        super().__init__(message)
        self.error = {"message": message, "extensions": {"code": code, **extensions}}


class CostModel:
    """Walks one operation of a validated document; see the module docstring for the rules."""

    def __init__(
        self,
        schema: GraphQLSchema,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Any,
    ) -> None:
        self.schema = schema
        self.operation = operation
        self.fragments = fragments
        self.variables = variables  # coerced, as graphql-core's get_variable_values returns

    # -- public --------------------------------------------------------------------------------

    def requested(self) -> int:
        """The cost charged before execution; raises `LimitExceeded` for oversized inputs."""
        root = self._root_type()
        if self.operation.operation == OperationType.MUTATION:
            total = 0
            for field, parent in self._fields(self.operation.selection_set, root):
                if not field.name.value.startswith("__"):
                    self._check_inputs(parent.fields[field.name.value], field)
                    total += MUTATION_COST
            return total
        return self._selection(self.operation.selection_set, root, None, actual=False)

    def actual(self, data: Mapping[str, Any] | None) -> int:
        """The cost of what was really returned in `data`."""
        if data is None:
            return 0
        root = self._root_type()
        if self.operation.operation == OperationType.MUTATION:
            return sum(
                MUTATION_COST
                for field, _ in self._fields(self.operation.selection_set, root)
                if not field.name.value.startswith("__")
            )
        return self._selection(self.operation.selection_set, root, data, actual=True)

    # -- walk ----------------------------------------------------------------------------------

    def _root_type(self) -> GraphQLObjectType:
        root = self.schema.get_root_type(self.operation.operation)
        if root is None:
            raise GraphQLError(f"schema has no {self.operation.operation.value} type")
        return root

    def _fields(
        self, selection_set: SelectionSetNode | None, parent: ParentType
    ) -> Iterator[tuple[FieldNode, ParentType]]:
        """Fields of a selection set with fragments flattened, each with its parent type."""
        if selection_set is None:
            return
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                yield sel, parent
            elif isinstance(sel, InlineFragmentNode):
                cond = sel.type_condition
                inner: Any = self.schema.get_type(cond.name.value) if cond else parent
                yield from self._fields(sel.selection_set, inner)
            elif isinstance(sel, FragmentSpreadNode):
                frag = self.fragments.get(sel.name.value)
                if frag is not None:
                    inner = self.schema.get_type(frag.type_condition.name.value)
                    yield from self._fields(frag.selection_set, inner)

    def _selection(
        self, selection_set: SelectionSetNode | None, parent: ParentType, data: Any, *, actual: bool
    ) -> int:
        # Fields with one response key (from several fragments) are charged once, at the max.
        by_key: dict[str, int] = {}
        for field, field_parent in self._fields(selection_set, parent):
            name = field.name.value
            if name.startswith("__") or name not in field_parent.fields:
                continue
            key = field.alias.value if field.alias else name
            if actual and (not isinstance(data, Mapping) or key not in data):
                continue
            value = data[key] if actual else None
            cost = self._field(field, field_parent.fields[name], parent, value, actual=actual)
            by_key[key] = max(by_key.get(key, 0), cost)
        return sum(by_key.values())

    def _field(
        self,
        node: FieldNode,
        field_def: GraphQLField,
        parent: ParentType,
        value: Any,
        *,
        actual: bool,
    ) -> int:
        named: Any = get_named_type(field_def.type)
        if is_leaf_type(named):
            return 0
        args = self._check_inputs(field_def, node)
        if named.name.endswith("Connection"):
            return self._connection(node, named, args, value, actual=actual)
        if node.name.value == "nodes" and "ids" in args:
            if not actual:
                per = 1 + self._selection(node.selection_set, named, None, actual=False)
                return len(args["ids"]) * per
            return sum(
                1 + self._selection(node.selection_set, named, item, actual=True)
                for item in value or ()
                if item is not None
            )
        if not actual:
            return 1 + self._selection(node.selection_set, named, None, actual=False)
        if value is None:
            return 0
        if isinstance(value, list):
            inner = [
                self._selection(node.selection_set, named, v, actual=True)
                for v in value
                if v is not None
            ]
            return 1 + max(inner, default=0)
        return 1 + self._selection(node.selection_set, named, value, actual=True)

    def _connection(
        self,
        node: FieldNode,
        conn_type: GraphQLObjectType,
        args: Mapping[str, Any],
        value: Any,
        *,
        actual: bool,
    ) -> int:
        if not actual:
            size = args.get("first") or args.get("last") or DEFAULT_PAGE_SIZE
            return 2 + size * self._per_node(node, conn_type, None)
        if not isinstance(value, Mapping):
            return 0
        totals = []
        for key, items in value.items():
            if isinstance(items, list):
                totals.append(sum(self._per_node(node, conn_type, (key, item)) for item in items))
        return 2 + max(totals, default=0)

    def _per_node(
        self, node: FieldNode, conn_type: GraphQLObjectType, item: tuple[str, Any] | None
    ) -> int:
        """Cost of one element: 1 + its node selection, via `nodes` or `edges { node }`."""
        best = 0
        for sub, sub_parent in self._fields(node.selection_set, conn_type):
            name = sub.name.value
            key = sub.alias.value if sub.alias else name
            if item is not None and item[0] != key:
                continue
            data = item[1] if item is not None else None
            if name == "nodes":
                node_type: Any = get_named_type(sub_parent.fields["nodes"].type)
                cost = 1 + self._selection(
                    sub.selection_set, node_type, data, actual=item is not None
                )
            elif name == "edges":
                edge_type: Any = get_named_type(sub_parent.fields["edges"].type)
                cost = 0
                for edge_field, edge_parent in self._fields(sub.selection_set, edge_type):
                    if edge_field.name.value != "node":
                        continue
                    edge_key = edge_field.alias.value if edge_field.alias else "node"
                    inner = data.get(edge_key) if isinstance(data, Mapping) else None
                    if item is not None and inner is None:
                        continue
                    node_type = get_named_type(edge_parent.fields["node"].type)
                    cost = max(
                        cost,
                        1
                        + self._selection(
                            edge_field.selection_set,
                            node_type,
                            inner,
                            actual=item is not None,
                        ),
                    )
            else:
                continue
            best = max(best, cost)
        return best

    def _check_inputs(self, field_def: GraphQLField, node: FieldNode) -> dict[str, Any]:
        args = get_argument_values(field_def, node, self.variables)
        for name in ("first", "last"):
            size = args.get(name)
            if isinstance(size, int) and size > MAX_PAGE_SIZE:
                raise LimitExceeded(
                    f"{name} cannot exceed {MAX_PAGE_SIZE}", "BAD_REQUEST", argumentName=name
                )
        for path, size in _list_sizes(args, node.name.value):
            if size > MAX_INPUT_SIZE:
                raise LimitExceeded(
                    f"The input array size of {size} is greater than the maximum allowed of "
                    f"{MAX_INPUT_SIZE}.",
                    "MAX_INPUT_SIZE_EXCEEDED",
                    path=path,
                )
        return args


def _list_sizes(value: Any, *path: str) -> Iterator[tuple[list[str], int]]:
    """Every list inside an argument value, with its path and length."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _list_sizes(inner, *path, str(key))
    elif isinstance(value, list):
        yield list(path), len(value)
        for index, inner in enumerate(value):
            yield from _list_sizes(inner, *path, str(index))
