"""Import-graph and size figures of the package layout (issue: architecture).

Usage: python scripts/layout_report.py [--json]

Prints, from the source alone (nothing is imported): files and lines per top-level area and per
method folder, the largest function, import cycles among ``kdsr_plugins`` modules, imports from
one method folder into another, imports from the lower layers into the layers above them (``core``
into a method, ``core`` into ``data_prep`` / ``tools`` / ``report`` / ``demo`` / the entry-point
modules, ``compat`` into anything else of the package), and the longest import chain from an entry point
(``train``, ``test``, ``__main__``, ``data_prep.__main__``, ``report.__main__``, ``demo.__main__``,
``tools.*``) down to the lowest module. The registration that ``import kdsr_plugins`` performs
(package -> registration -> core / methods) is not counted as an edge of the entry point.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import os.path as osp
import sys
from collections import defaultdict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PKG = 'kdsr_plugins'


def module_files() -> dict[str, str]:
    """Dotted module name -> file path of every module of the package."""
    out = {}
    for root, dirs, files in os.walk(osp.join(ROOT, PKG)):
        dirs[:] = sorted(d for d in dirs if not d.startswith(('_', '.')))
        for f in sorted(files):
            if f.endswith('.py'):
                rel = osp.relpath(osp.join(root, f), ROOT)[:-3].replace(os.sep, '.')
                out[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = osp.join(root, f)
    return out


def imports_of(path: str, name: str, modules: dict[str, str]) -> set[str]:
    """``kdsr_plugins`` modules imported by one file (module level and inside functions)."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    found = set()
    pkg = name if path.endswith('__init__.py') else name.rpartition('.')[0]
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = pkg.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f'{base}.{a.name}' for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition('.')[0]
            if t and t != name and t != PKG:
                found.add(t)
    return found


def method_of(mod: str) -> str | None:
    parts = mod.split('.')
    return parts[2] if len(parts) > 2 and parts[1] == 'methods' else None


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def area(mod: str) -> str:
    parts = mod.split('.')
    return parts[1] if len(parts) > 1 else 'package'


#: Areas each lower layer may import from (anything else of the package is an upward import).
ALLOWED_BELOW = {'compat': ('compat',), 'core': ('core', 'compat')}


def largest_functions(modules: dict[str, str], n: int = 3) -> list[tuple[int, str]]:
    sizes = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                sizes.append((node.end_lineno - node.lineno + 1, f'{name}.{node.name}'))
    return sorted(sizes, reverse=True)[:n]


def count_lines(path: str) -> int:
    with open(path, encoding='utf-8') as f:
        return sum(1 for _ in f)


def report() -> dict:
    modules = module_files()
    graph = {m: imports_of(p, m, modules) for m, p in modules.items()}
    cross = sorted((a, b) for a, deps in graph.items() for b in deps
                   if method_of(a) and method_of(b) and method_of(a) != method_of(b))
    core_to_methods = sorted((a, b) for a, deps in graph.items() for b in deps
                             if area(a) in ('core', 'compat') and area(b) == 'methods')
    upward = sorted((a, b) for a, deps in graph.items() for b in deps
                    if area(a) in ALLOWED_BELOW and area(b) not in ALLOWED_BELOW[area(a)] and area(b) != 'methods')
    sizes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for m, p in modules.items():
        key = f'methods/{method_of(m)}' if method_of(m) else area(m)
        sizes[key][0] += 1
        sizes[key][1] += count_lines(p)

    memo: dict[str, list[str]] = {}

    def longest_chain(m: str, path: frozenset = frozenset()) -> list[str]:
        if m in memo:
            return memo[m]
        path = path | {m}
        chain = [m] + max((longest_chain(d, path) for d in sorted(graph[m]) if d not in path), key=len, default=[])
        if not path & set(chain[1:]):
            memo[m] = chain
        return chain

    entries = [m for m in modules if m.endswith(('.train', '.test', '.__main__')) or area(m) == 'tools']
    chain = max((longest_chain(e) for e in entries), key=len, default=[])
    return {'files_lines': {k: {'files': v[0], 'lines': v[1]} for k, v in sorted(sizes.items())},
            'largest_functions': [{'lines': n, 'function': f} for n, f in largest_functions(modules)],
            'cycles': find_cycles(graph), 'method_to_method_imports': cross,
            'core_to_method_imports': core_to_methods, 'upward_imports': upward,
            'longest_import_chain': chain, 'import_layers_below_entry_points': max(len(chain) - 1, 0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--json', action='store_true', help='print JSON')
    args = parser.parse_args(argv)
    rep = report()
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    print('| area | files | lines |\n|---|---:|---:|')
    for k, v in rep['files_lines'].items():
        print(f'| {k} | {v["files"]} | {v["lines"]} |')
    largest = ', '.join(f'{x["function"]} ({x["lines"]} lines)' for x in rep['largest_functions'])
    print('\nlargest functions: ' + largest)
    print(f'import cycles: {rep["cycles"] or "none"}')
    print(f'method -> method imports: {rep["method_to_method_imports"] or "none"}')
    print(f'core/compat -> method imports: {rep["core_to_method_imports"] or "none"}')
    print(f'core -> data_prep/tools/report/demo/entry points, compat -> package imports: '
          f'{rep["upward_imports"] or "none"}')
    print(f'longest import chain from an entry point: {" -> ".join(rep["longest_import_chain"])} '
          f'({rep["import_layers_below_entry_points"]} layers below the entry point)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
