"""The dependency rules of DESIGN §3, checked by walking imports with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what a plugin may import from the core: the contract, value types, and the emulator kit
PLUGIN_MAY_IMPORT = ("agent.hookspecs", "agent.channel", "agent.clock", "agent.emulator")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_core_never_imports_plugins() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "agent").rglob("*.py")
        for name in _imports(path)
        if name == "plugins" or name.startswith("plugins.")
    ]
    assert offenders == []


def test_plugins_import_only_the_contract_and_never_each_other() -> None:
    offenders = []
    for path in (ROOT / "plugins").rglob("*.py"):
        own = path.relative_to(ROOT / "plugins").parts[0]
        for name in _imports(path):
            if name.startswith("agent") and not name.startswith(PLUGIN_MAY_IMPORT):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
            if name.startswith("plugins.") and name.split(".")[1] != own:
                offenders.append(f"{path.relative_to(ROOT)} imports another plugin: {name}")
    assert offenders == []


def test_the_core_does_not_depend_on_the_web_layer() -> None:
    # every module of the agent but the web layer itself and the command line, which builds
    # the web app: the core (ledger, replication, peering…), the emulators, the test kit
    core = [
        path
        for path in (ROOT / "agent").rglob("*.py")
        if "web" not in path.relative_to(ROOT / "agent").parts[:1] and path.name != "cli.py"
    ]
    assert len(core) > 30
    offenders = [
        f"{path.relative_to(ROOT)} imports {imp}"
        for path in core
        for imp in _imports(path)
        if imp == "agent.web" or imp.startswith("agent.web.")
    ]
    assert offenders == []


# the parts of an agent, built only by its composition root (`agent/agent.py`)
PARTS = (
    "Alerts",
    "Reconciler",
    "Replicator",
    "Importer",
    "JoinImport",
    "JoinDesk",
    "Notifier",
    "Peering",
    "Roster",
    "RuleBook",
)


def _constructions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in PARTS
    ]


def test_only_the_agent_builds_its_parts() -> None:
    # the web app and the simulation construct an `Agent`; nothing else wires parts together
    # (unit tests of one part build that part on its own, which is what they test)
    sources = [*(ROOT / "agent").rglob("*.py"), *(ROOT / "tests" / "sim").rglob("*.py")]
    built = {str(p.relative_to(ROOT)): _constructions(p) for p in sources}
    assert sorted(built["agent/agent.py"]) == sorted(PARTS)
    offenders = {path: names for path, names in built.items() if names and path != "agent/agent.py"}
    assert offenders == {}


def _literal_kinds(path: Path) -> set[str]:
    """The sync-log kinds a module writes by name: `record(session, KIND, …)`,
    `entry(KIND, …)` and `kind=KIND` in any call."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        args = {"record": node.args[1:2], "entry": node.args[:1]}.get(name, [])
        args += [kw.value for kw in node.keywords if kw.arg == "kind"]
        found |= {a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return found


def test_every_kind_the_agent_logs_is_listed() -> None:
    """`shopsync log --kind`, the page and `/api/log` refuse kinds outside `synclog.KINDS`, so a
    kind written but not listed could never be asked for."""
    from agent.membership import STATES
    from agent.synclog import KINDS

    written = {k for path in (ROOT / "agent").rglob("*.py") for k in _literal_kinds(path)}
    written |= {f"member_{state}" for state in STATES}  # the roster's `member_{state}`
    assert written >= {"write", "change", "oversold", "joined", "rules"}  # the walk finds them
    assert sorted(written - set(KINDS)) == []
