"""`shopsync rules`: show, set, unset and test the stock rules (parse, call the API, print)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from agent.channel import ConfigError

__all__ = ["add_parser", "cmd_rules"]


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


def add_parser(
    command: Callable[..., Any], data_dir: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The `rules` subcommand, on the CLI's parser."""
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
