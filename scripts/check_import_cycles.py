"""Fails (exit 1) when the package's import graph has a cycle, counting imports inside functions too.

  python scripts/check_import_cycles.py [--package=jaxinpaint]

An import placed inside a function only hides a cycle from the interpreter; it does not remove it, so every
`import`/`from ... import` anywhere in a module is an edge. Prints each cycle found as `a -> b -> a`.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys


def module_name(root: str, path: str) -> str:
  rel = os.path.relpath(path, os.path.dirname(root))[: -len(".py")].replace(os.sep, ".")
  return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def import_graph(root: str) -> dict[str, set[str]]:
  """{module: modules of the package it imports}, package submodules resolved to the longest existing name."""
  files = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      if name.endswith(".py"):
        files[module_name(root, os.path.join(dirpath, name))] = os.path.join(dirpath, name)
  package = os.path.basename(root)

  def resolve(name: str) -> str | None:
    while name and name not in files:
      name = name.rpartition(".")[0]
    return name or None

  graph = {}
  for mod, path in files.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    is_pkg = path.endswith("__init__.py")
    edges = set()
    for node in ast.walk(tree):
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = mod.split(".")
          parts = parts if is_pkg else parts[:-1]
          parts = parts[: len(parts) - node.level + 1]
          base = ".".join(parts + ([base] if base else []))
        targets = [f"{base}.{a.name}" for a in node.names] + [base]
      for t in targets:
        if t == package or t.startswith(package + "."):
          r = resolve(t)
          if r and r != mod and not mod.startswith(r + "."):  # a submodule importing its own package is not a cycle
            edges.add(r)
    graph[mod] = edges
  return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
  """(a shortest cycle, all its members) per strongly connected component of more than one module (Tarjan)."""
  index, low, stack, on_stack, comps = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        comps.append(comp)

  sys.setrecursionlimit(10000)
  for v in sorted(graph):
    if v not in index:
      visit(v)
  out = []
  for comp in comps:
    members = set(comp)
    start = min(comp)
    # Walk inside the component back to the start: a shortest path by BFS.
    prev, frontier = {start: None}, [start]
    found = None
    while frontier and found is None:
      nxt = []
      for u in frontier:
        for w in sorted(graph[u] & members):
          if w == start:
            found = u
            break
          if w not in prev:
            prev[w] = u
            nxt.append(w)
        if found is not None:
          break
      frontier = nxt
    path = []
    u = found
    while u is not None:
      path.append(u)
      u = prev[u]
    path.reverse()
    out.append((path + [start], sorted(members)))
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--package", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jaxinpaint")
  )
  args = parser.parse_args()
  found = cycles(import_graph(os.path.abspath(args.package)))
  for cycle, members in found:
    print("import cycle: " + " -> ".join(cycle) + f"  (modules caught in it: {', '.join(members)})")
  if not found:
    print(f"no import cycles in {os.path.basename(args.package)}")
  return 1 if found else 0


if __name__ == "__main__":
  sys.exit(main())
