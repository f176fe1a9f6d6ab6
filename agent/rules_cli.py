"""`shopsync rules`: show, set, unset and test the stock rules (parse, call the API, print)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from agent.channel import ConfigError

__all__ = ["add_parser", "cmd_bundles", "cmd_locations", "cmd_rules"]


def client_for(args: argparse.Namespace) -> Any:
    from agent.cli import _client  # the CLI's one way to its agent's API

    return _client(args)


def _print_json(value: Any) -> None:
    from agent.cli import _print_json as print_json

    print_json(value)


async def cmd_rules(args: argparse.Namespace) -> int:
    """rules show | set NAME=VALUE… | unset NAME… | test SKU: this shop's and the group's."""
    from agent.console import print_rules, print_rules_test
    from agent.rules import Priority, edited, rules_from_wire

    client = client_for(args)
    if args.action == "test":
        if len(args.names) != 1:
            raise ConfigError("say which SKU: shopsync rules test SKU [--pool N]")
        params = {"sku": args.names[0], "pool": args.pool}
        answer = await client.get("/api/rules/test", **params)
        if args.json:
            _print_json(answer)
        else:
            print_rules_test(answer)
        return 0
    if args.action == "show":
        answer = await client.get("/api/rules")
    elif args.priority is not None or (args.action == "unset" and args.no_priority):
        if args.action == "set" and args.at_most is None:
            raise ConfigError("say when: shopsync rules set --priority SHOP --at-most N")
        priority = None if args.action == "unset" else Priority(args.priority, args.at_most)
        body = {"priority": None if priority is None else priority.to_wire()}
        answer = await client.post("/api/rules/priority", body)
    else:
        if args.action == "set" and not args.names:
            raise ConfigError("say what: shopsync rules set buffer=2 percent=80 [--sku PATTERN]")
        if args.action == "unset" and not args.names and args.sku is None:
            raise ConfigError("say what: shopsync rules unset NAME… [--sku PATTERN]")
        current = rules_from_wire((await client.get("/api/rules"))["rules"])
        put, drop = (args.names, ()) if args.action == "set" else ((), args.names)
        rules = edited(current, put=put, drop=drop, sku=args.sku)
        answer = await client.post("/api/rules", {"rules": rules.to_wire()})
    if args.json:
        _print_json(answer)
    else:
        print_rules(answer)
    return 0


async def cmd_bundles(args: argparse.Namespace) -> int:
    """bundles list | add SKU COMPONENT:QTY… | remove SKU: the group's bundles."""
    from urllib.parse import quote

    from agent.bundles import components_from_text
    from agent.console import print_bundles

    client = client_for(args)
    if args.action == "list":
        if args.sku:
            raise ConfigError("list takes no SKU: shopsync bundles list")
        answer = await client.get("/api/bundles")
    elif args.action == "add":
        if not args.sku or not args.components:
            raise ConfigError("say what: shopsync bundles add BUNDLE_SKU COMPONENT:QTY…")
        try:
            bundle = components_from_text(args.sku, args.components)
        except ValueError as exc:  # BundleError: says what is wrong
            raise ConfigError(str(exc)) from None
        answer = await client.post("/api/bundles", bundle.to_wire())
    else:
        if not args.sku or args.components:
            raise ConfigError("say which: shopsync bundles remove BUNDLE_SKU")
        answer = await client.request("DELETE", "/api/bundles/" + quote(args.sku, safe=""))
    if args.json:
        _print_json(answer)
    else:
        print_bundles(answer)
    return 0


async def cmd_locations(args: argparse.Namespace) -> int:
    """locations show | set LOCATION WAREHOUSE… | remove LOCATION [--dry-run]: which
    warehouses each of this shop's locations sells from."""
    from agent.console import print_locations

    client = client_for(args)
    if args.action == "show":
        if args.location or args.warehouses or args.dry_run:
            raise ConfigError("show takes nothing more: shopsync locations show")
        answer = await client.get("/api/locations")
    else:
        if not args.location:
            raise ConfigError(f"say which: shopsync locations {args.action} LOCATION …")
        if args.action == "set" and not args.warehouses:
            raise ConfigError("say from where: shopsync locations set LOCATION WAREHOUSE…")
        if args.action == "remove" and args.warehouses:
            raise ConfigError("remove takes the location only: shopsync locations remove LOC")
        warehouses = [w for spec in args.warehouses for w in spec.split(",") if w.strip()]
        body = {"location": args.location, "warehouses": warehouses, "dry_run": args.dry_run}
        answer = await client.post("/api/locations", body)
    if args.json:
        _print_json(answer)
    else:
        print_locations(answer)
    return 0


def add_parser(
    command: Callable[..., Any], data_dir: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The `rules`, `locations` and `bundles` subcommands, on the CLI's parser."""
    p = command("rules", cmd_rules, "show, set or test the stock rules (what each shop publishes)")
    data_dir(p)
    p.add_argument("action", choices=["show", "set", "unset", "test"])
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME=VALUE",
        help="set: buffer=N percent=P plus=K max=N; unset: the names; test: the SKU",
    )
    p.add_argument("--sku", metavar="SKU_OR_PATTERN", help="the rules of one SKU or glob")
    p.add_argument("--priority", metavar="SHOP", help="the group's priority shop when low")
    p.add_argument("--at-most", type=int, metavar="N", help="…while a pool is N or less")
    p.add_argument("--no-priority", action="store_true", help="with unset: no priority shop")
    p.add_argument("--pool", type=int, help="with test: the pool to decide for")
    p.add_argument("--json", action="store_true")

    p = command("locations", cmd_locations, "show or link this shop's locations to warehouses")
    data_dir(p)
    p.add_argument("action", nargs="?", default="show", choices=["show", "set", "remove"])
    p.add_argument("location", nargs="?", help='a platform location id, or "primary"')
    p.add_argument(
        "warehouses", nargs="*", metavar="WAREHOUSE", help="set: the warehouses, in order"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    p.add_argument("--json", action="store_true")

    p = command("bundles", cmd_bundles, "list, add or remove the group's bundles (kits, cases)")
    data_dir(p)
    p.add_argument("action", choices=["list", "add", "remove"])
    p.add_argument("sku", nargs="?", metavar="BUNDLE_SKU")
    p.add_argument(
        "components",
        nargs="*",
        metavar="COMPONENT:QTY",
        help="add: each component SKU and how many one bundle takes (SAUSAGE:6)",
    )
    p.add_argument("--json", action="store_true")
