"""The package's import rules (ARCHITECTURE.md): a torch-free runtime, no reaching into a sibling's
private names, and every command reachable with --help."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from clip_match import cli

PACKAGE = Path(__file__).resolve().parents[1] / "clip_match"
RUNTIME = ("clip_match.runtime", "clip_match.index", "clip_match.grid", "clip_match.formulas", "clip_match.query",
           "clip_match.data", "clip_match.annotate", "clip_match.commands.query", "clip_match.commands.grid",
           "clip_match.commands.index", "clip_match.commands.eval_grid", "clip_match.commands.eval_retrieval",
           "clip_match.serve", "clip_match.client", "clip_match.commands.serve")
TRAINING_SIDE = ("torch", "torchvision", "cn_clip", "clip_match.train", "clip_match.model", "clip_match.export")


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file, nested ones included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_runtime_modules_never_import_training_side_code():
    offences = [f"{name}:{line} imports {module}"
                for name, path in _modules().items() if _within(name, RUNTIME)
                for module, _names, line in _imports(name, path) if _within(module, TRAINING_SIDE)]
    assert not offences, offences


def test_runtime_imports_leave_torch_unloaded():
    runtime = [name for name in _modules() if _within(name, RUNTIME)]
    code = (f"import importlib, sys\nfor name in {runtime!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'cn_clip')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_module_imports_a_siblings_private_names():
    modules = _modules()
    offences = [f"{name}:{line} takes {taken} from {module}"
                for name, path in modules.items()
                for module, names, line in _imports(name, path) if module in modules and module != name
                for taken in names if taken.startswith("_") and not taken.startswith("__")]
    assert not offences, offences


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: clip-match" in capsys.readouterr().out
