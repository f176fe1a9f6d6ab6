"""`python -m tests.sim`: run many seeds, or replay one.

    python -m tests.sim --seeds 10000 [--first S] [--jobs N] [--mutate NAME]
        [--bundles] [--warehouses]
    python -m tests.sim --seed S [--trace]

Many seeds: progress on stderr, each failure with the command that replays it, and a last
line of JSON ``{"seeds": N, "failed": [...], "faults": {...}, "seconds": s}``. The exit
status is 1 when a seed failed. Python's string hashing is pinned (PYTHONHASHSEED=0) so that
a seed replays the same way in any process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from multiprocessing.connection import wait
from typing import Any

from tests.sim.mutations import MUTATIONS
from tests.sim.runtime import Crashed
from tests.sim.world import Result, run_seed

CHUNK = 4  # seeds a worker takes at a time


Work = tuple[int, str | None, bool, bool]  # seed, mutation, bundles, warehouses


def _replay(
    seed: int, mutation: str | None, bundles: bool = False, warehouses: bool = False
) -> str:
    extra = f" --mutate {mutation}" if mutation else ""
    extra += " --bundles" if bundles else ""
    extra += " --warehouses" if warehouses else ""
    return f"python -m tests.sim --seed {seed} --trace{extra}"


def _one(args: Work) -> Result:
    seed, mutation, bundles, warehouses = args
    try:
        return run_seed(seed, mutation=mutation, bundles=bundles, warehouses=warehouses)
    except (Exception, Crashed) as exc:  # a crash of the harness (or a kill it did not
        # expect, a BaseException that would end a worker process) fails the seed, not the run
        return Result(seed, [f"harness error: {exc!r}"], "-", {}, -1.0)


def _results(
    seeds: list[int],
    jobs: int,
    mutation: str | None,
    bundles: bool = False,
    warehouses: bool = False,
) -> Iterator[Result]:
    work = [(s, mutation, bundles, warehouses) for s in seeds]
    if jobs <= 1:
        yield from map(_one, work)
        return
    yield from _in_processes(work, jobs)


def _in_processes(work: list[Work], jobs: int) -> Iterator[Result]:
    """`work` in forked processes, `jobs` at a time, `CHUNK` seeds each.

    A seed that kills its process (a crash in C, the kernel's OOM killer) must not hang the
    run, as a process pool does when a worker dies: the chunk's seeds are run again one per
    process, and the one whose process dies is a failure named with its exit code. Closing
    the generator (--stop-on-fail) kills the processes still running."""
    context = multiprocessing.get_context("fork")
    queue = [work[i : i + CHUNK] for i in range(0, len(work), CHUNK)][::-1]
    running: dict[Any, tuple[Any, list[Work]]] = {}  # pipe -> process, chunk
    try:
        while queue or running:
            while queue and len(running) < jobs:
                chunk = queue.pop()
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_send, args=(chunk, send), daemon=True)
                process.start()
                send.close()
                running[receive] = (process, chunk)
            for receive in wait(list(running)):
                process, chunk = running.pop(receive)
                try:
                    results: list[Result] | None = receive.recv()
                except EOFError:  # it died before it could answer
                    results = None
                receive.close()
                process.join()
                if results is not None:
                    yield from results
                elif len(chunk) > 1:
                    queue += [[item] for item in reversed(chunk)]  # which one was it?
                else:
                    problem = f"harness error: its process died (exit code {process.exitcode})"
                    yield Result(chunk[0][0], [problem], "-", {}, -1.0)
    finally:
        for process, _ in running.values():
            process.kill()
            process.join()


def _send(chunk: list[Work], send: Any) -> None:
    send.send([_one(item) for item in chunk])


def _many(args: argparse.Namespace) -> int:
    seeds = list(range(args.first, args.first + args.seeds))
    started = time.monotonic()
    failed: list[int] = []
    faults: dict[str, int] = {}
    step = max(1, min(100, len(seeds) // 20))
    # closed at once on --stop-on-fail (its processes killed), not left to the collector
    draws = (args.bundles, args.warehouses)
    with contextlib.closing(_results(seeds, args.jobs, args.mutate, *draws)) as results:
        for done, result in enumerate(results, start=1):
            for name, n in result.faults.items():
                faults[name] = faults.get(name, 0) + n
            if not result.ok:
                failed.append(result.seed)
                print(f"FAIL seed {result.seed}: {result.problems[0]}", file=sys.stderr)
                for problem in result.problems[1:4]:
                    print(f"     {problem}", file=sys.stderr)
                replay = _replay(result.seed, args.mutate, *draws)
                print(f"     replay: {replay}", file=sys.stderr)
                if args.stop_on_fail:
                    break
            if done % step == 0 or done == len(seeds):
                rate = done / max(1e-9, time.monotonic() - started)
                print(
                    f"{done}/{len(seeds)} seeds, {len(failed)} failed, {rate:.1f} seeds/s",
                    file=sys.stderr,
                    flush=True,
                )
    summary = {
        "seeds": len(seeds),
        "failed": sorted(failed),
        "faults": dict(sorted(faults.items())),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary), flush=True)
    return 1 if failed else 0


def _single(args: argparse.Namespace) -> int:
    started = time.monotonic()
    result = run_seed(
        args.seed,
        keep_trace=args.trace,
        mutation=args.mutate,
        bundles=args.bundles,
        warehouses=args.warehouses,
    )
    for line in result.trace:
        print(line)
    verdict = "ok" if result.ok else "FAILED"
    print(
        f"seed {result.seed}: {verdict}, trace {result.trace_hash}, "
        f"{result.virtual_seconds}s virtual, {time.monotonic() - started:.2f}s real"
    )
    print(f"faults: {json.dumps(result.faults)}")
    for problem in result.problems:
        print(f"  - {problem}")
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    parser.add_argument("--seed", type=int, help="replay one seed")
    parser.add_argument("--trace", action="store_true", help="print the replayed run's trace")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--mutate", choices=sorted(MUTATIONS), help="run a broken build")
    parser.add_argument("--stop-on-fail", action="store_true", help="stop at the first failure")
    parser.add_argument(
        "--bundles", action="store_true", help="draw bundles into the runs (their own stream)"
    )
    parser.add_argument(
        "--warehouses",
        action="store_true",
        help="draw a second warehouse and shops' locations into the runs (their own stream)",
    )
    args = parser.parse_args(argv)
    return _single(args) if args.seed is not None else _many(args)


if __name__ == "__main__":
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, "-m", "tests.sim", *sys.argv[1:]], env)
    sys.exit(main())
