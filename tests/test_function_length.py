"""STYLE.md: no function in src/ over 60 lines (issue 17). A function's length here is its body,
docstring included, from its first statement to its last line (nested functions count
within their parent and on their own)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 60


def long_functions(root: Path, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` of every function under ``root`` whose body is over ``limit``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.body[0].lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_src_is_over_60_lines():
    assert long_functions(SRC) == []


def test_the_check_counts_the_body_with_its_docstring(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    (tmp_path / "short.py").write_text(f'def fits():\n    """Why."""\n{body}\n')
    (tmp_path / "long.py").write_text(f'def too_long():\n    """Why."""\n{body}\n    return x0\n')
    assert long_functions(tmp_path) == ["long.py:1 too_long (61 lines)"]
