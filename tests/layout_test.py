"""The shape of the code: the entry point and the loop stay short, imports point one way, and
the README's layout table is the tree."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules() -> dict[str, str]:
  """{dotted module name: path} of every module under jtrans/."""
  found = {}
  for folder, _, files in os.walk(os.path.join(ROOT, "jtrans")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        found[dotted.removesuffix(".__init__")] = path
  return found


def top_level_imports(path: str, known: set[str]) -> set[str]:
  """The jtrans modules `path` imports when it is imported (not those imported in functions)."""
  imported = set()
  for node in ast.parse(open(path).read()).body:
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jtrans"):
      for alias in node.names:
        candidate = f"{node.module}.{alias.name}"
        imported.add(candidate if candidate in known else node.module)
    elif isinstance(node, ast.Import):
      imported |= {a.name for a in node.names if a.name in known}
  return imported


def test_run_py_is_flags_and_dispatch():
  assert len(open(os.path.join(ROOT, "run.py")).read().splitlines()) < 120


def test_no_function_of_the_loop_is_longer_than_a_screen():
  tree = ast.parse(open(os.path.join(ROOT, "jtrans", "train.py")).read())
  long = [
    (f.name, f.end_lineno - f.lineno + 1)
    for f in ast.walk(tree)
    if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno + 1 > 60
  ]
  assert not long, long


def test_module_imports_have_no_cycle():
  found = modules()
  graph = {name: top_level_imports(path, set(found)) - {name} for name, path in found.items()}
  # A package's __init__ importing its own submodules is how packages export; not a cycle.
  graph = {name: {d for d in deps if not d.startswith(name + ".")} for name, deps in graph.items()}
  state: dict[str, int] = {}

  def visit(name: str, trail: list[str]) -> None:
    state[name] = 1
    for dep in sorted(graph.get(name, ())):
      assert state.get(dep) != 1, "import cycle: " + " -> ".join(trail + [name, dep])
      if dep not in state:
        visit(dep, trail + [name])
    state[name] = 2

  for name in sorted(graph):
    if name not in state:
      visit(name, [])


def test_the_readme_layout_table_is_the_tree():
  readme = open(os.path.join(ROOT, "README.md")).read()
  table = readme[readme.index("## Layout") : readme.index("\n## ", readme.index("## Layout") + 1)]
  named = set(re.findall(r"`(jtrans/[\w/]+(?:\.py)?)`", table))
  for path in named:
    assert os.path.exists(os.path.join(ROOT, path)), f"README names {path}, which does not exist"
  top = {
    f"jtrans/{n}" + ("/" if os.path.isdir(os.path.join(ROOT, "jtrans", n)) else "")
    for n in os.listdir(os.path.join(ROOT, "jtrans"))
    if not n.startswith("__")
    and (n.endswith(".py") or os.path.isdir(os.path.join(ROOT, "jtrans", n)))
  }
  missing = [p for p in top if not any(n == p.rstrip("/") or n.startswith(p) for n in named)]
  assert not missing, f"the README's layout table does not mention {sorted(missing)}"
