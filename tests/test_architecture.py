"""The layers hold: no import cycle among keyledger's modules, and SQLite only in the store.

Read from the source with :mod:`ast`, every import counted: at module level, inside a
function (a lazy import is still a dependency) and under ``TYPE_CHECKING`` (a type is one
too). ``from ledger import events`` names the module ``ledger.events``, not the package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "projections", "cli")

#: The modules that may speak SQL and import ``sqlite3``: the storage layer. The header
#: reader is apart so that the executable can read the KDF record before the rest loads;
#: the read models' tables are apart from the event store they sit beside.
STORE = {"ledger.store", "ledger.store_sqlite", "ledger.store_postgres", "ledger.store_postgres_roles",
         "ledger.store_header",
         "ledger.store_read_models"}

def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            parts = file.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = file
    return found


MODULES = _modules()


def _imports(name: str, file: Path) -> Iterator[str]:
    """Every module ``name`` imports, as a dotted name (keyledger's or not)."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            submodules = [f"{source}.{a.name}" for a in node.names
                          if f"{source}.{a.name}" in MODULES]
            yield from submodules
            if len(submodules) < len(node.names):
                yield source


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _imports(name, file) if m in MODULES and m != name}
            for name, file in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_cycle_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_counts_lazy_and_type_only_imports() -> None:
    graph = _graph()
    assert "ledger.service" in graph["ledger.backup"]  # imported inside functions only
    assert "ledger.session" in graph["ledger.lifecycle"]  # under TYPE_CHECKING only
    assert "ledger.events" in graph["ledger.store"]  # `from ledger import events as ev`


def test_no_import_cycle_in_ledger_projections_or_cli() -> None:
    assert _cycles(_graph()) == []


def test_the_read_side_and_the_cli_never_import_the_write_operations() -> None:
    """Reports and read models take rules from the domain, not from the operations."""
    operations = {"ledger.service", "ledger.session", "ledger.migration", "ledger.importing",
                  "ledger.lifecycle", "ledger.backup", "ledger.pipeline"}
    graph = _graph()
    reaching = {name: sorted(graph[name] & operations)
                for name in graph if name.startswith("projections")}
    assert {name: deps for name, deps in reaching.items() if deps} == {}


DRIVERS = {"sqlite3", "psycopg", "psycopg_pool"}


def _speaks_sqlite(file: Path) -> bool:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in DRIVERS
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in DRIVERS:
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            words = node.value.lstrip().split(None, 1)
            if words and words[0].upper() in {"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE",
                                              "DROP", "ALTER", "PRAGMA", "WITH"} and (
                    len(words) > 1 and words[0].isupper()):
                return True
    return False


def test_sqlite_and_sql_stay_in_the_store() -> None:
    """Nothing but the storage layer imports ``sqlite3``, catches its errors or holds a
    statement: the store translates database errors into keyledger's own."""
    speaking = {name for name, file in MODULES.items() if _speaks_sqlite(file)}
    assert speaking >= STORE  # the check itself sees SQL where there is some
    assert speaking - STORE == set()
