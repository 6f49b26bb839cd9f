"""Fail if any function or method in ssrs_nb/ is longer than the limit (default 60 lines, decorators and docstring
included): the loop is kept in small named steps. `python tools/func_length.py [--max 60] [paths...]`."""
import ast
import sys
from pathlib import Path


def long_functions(paths, limit=60):
    "(file, name, first line, length) of every function longer than `limit` lines."
    out = []
    for p in paths:
        tree = ast.parse(Path(p).read_text(), filename=str(p))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                n = node.end_lineno - start + 1
                if n > limit: out.append((str(p), node.name, start, n))
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    limit = 60
    if "--max" in args:
        i = args.index("--max"); limit = int(args[i + 1]); del args[i:i + 2]
    paths = args or sorted(Path(__file__).resolve().parent.parent.glob("ssrs_nb/*.py"))
    bad = long_functions(paths, limit)
    for f, name, line, n in bad: print(f"{f}:{line}: {name} is {n} lines (limit {limit}); split it into named steps")
    if not bad: print(f"function length: no function over {limit} lines in {len(paths)} files")
    sys.exit(1 if bad else 0)
