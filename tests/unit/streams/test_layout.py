"""The rooms of streams/ and the one way their imports run (docs/architecture.md):
a module imports only from its own room and the rooms below it; nothing outside
streams/cli/ imports the CLI; project imports sit at the top of a module except in
streams/cli/ (start-up time) and under `if TYPE_CHECKING:`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STREAMS = Path(__file__).resolve().parents[3] / "streams"
# Floor of each room; a room may import its own and lower floors. stages and runtime
# share a floor and must not import each other (the runtime knows no stage).
FLOOR = {
    "foundation": 0,
    "domain": 1,
    "stages": 2,
    "runtime": 2,
    "worker": 3,
    "client": 4,
    "jobs": 5,
    "api": 6,
    "demo": 7,
    "harness": 8,
    "cli": 9,
}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in FLOOR else "foundation"


def modules() -> list[tuple[str, ast.Module]]:
    return [
        (".".join(p.relative_to(STREAMS.parent).with_suffix("").parts), ast.parse(p.read_text()))
        for p in sorted(STREAMS.rglob("*.py"))
    ]


def imported(node: ast.ImportFrom) -> list[str]:
    if node.module == "streams" or (node.module or "").count(".") == 1 and node.module.split(".")[1] in FLOOR:
        return [f"{node.module}.{a.name}" for a in node.names]
    return [node.module or ""]


def type_checking_ids(tree: ast.Module) -> set[int]:
    return {
        id(n)
        for top in tree.body
        if isinstance(top, ast.If) and "TYPE_CHECKING" in ast.unparse(top.test)
        for n in ast.walk(top)
    }


def test_every_module_is_in_a_room_this_test_knows() -> None:
    found = {room(name) for name, _ in modules()}
    assert found <= set(FLOOR)
    assert {"domain", "stages", "runtime", "worker", "client", "jobs", "api", "cli"} <= found


@pytest.mark.parametrize(("name", "tree"), modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_run_one_way(name: str, tree: ast.Module) -> None:
    mine = room(name)
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("streams") and not node.level:
            for target in imported(node):
                theirs = room(target)
                if theirs == mine:
                    continue
                if FLOOR[theirs] > FLOOR[mine] or FLOOR[theirs] == FLOOR[mine]:
                    wrong.append(f"{name} ({mine}) imports {target} ({theirs})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("name", "tree"), [m for m in modules() if room(m[0]) != "cli"], ids=lambda v: v if isinstance(v, str) else ""
)
def test_project_imports_sit_at_the_top_outside_the_cli(name: str, tree: ast.Module) -> None:
    top, guarded = {id(n) for n in tree.body}, type_checking_ids(tree)
    lazy = [
        f"line {n.lineno}: {n.module}"
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom)
        and id(n) not in top
        and id(n) not in guarded
        and (n.module or "").split(".")[0] in {"streams", "schemas", "models", "connectors"}
    ]
    assert not lazy, f"{name} imports inside a function: {lazy}"


def test_a_deliberately_upward_import_is_caught() -> None:
    tree = ast.parse("from streams.jobs.sink import serve\n")
    node = tree.body[0]
    assert isinstance(node, ast.ImportFrom)
    assert FLOOR[room(imported(node)[0])] > FLOOR[room("streams.domain.ledger")]
