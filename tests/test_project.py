import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```bash\n# \((\d)\)[^\n]*\n([^\n]+)\n```", (ROOT / "README.md").read_text())


def test_readme_has_exactly_two_setup_commands():
    assert [n for n, _ in readme_commands()] == ["1", "2"]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = dict(readme_commands())["2"]
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_indexes_folder_keeps_only_its_readme():
    lines = (ROOT / "indexes" / ".gitignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules == ["*", "!.gitignore", "!README.md"]


def test_ruff_finds_nothing_in_the_repository():
    """`ruff check .` is clean, the tests included: CI runs it through this test (an undefined
    name in a test module once reached main because nothing ran ruff)."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


PACKAGE = ROOT / "harmosearch"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500
# Being split in other branches at the time these bounds were set; drop a room from here once its
# split has landed, so that the bounds hold there too.
SPLIT_ELSEWHERE = ()


def house_modules():
    """Every module of the package: (dotted name, path, whether it is a package's __init__)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        yield ".".join(parts[:-1] if is_package else parts), path, is_package


def oversized(paths):
    """'path: N lines' for each module over MAX_MODULE_LINES, and 'path:line name: N lines' for each
    function over MAX_FUNCTION_LINES, counted from its def line (decorators not counted) to its last."""
    found = []
    for path in paths:
        source = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            found.append(f"{where}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    return found


def rooms():
    """The package's top-level modules and subpackages, one test case each."""
    names = sorted({path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.rglob("*.py")})
    reason = "harmosearch/{}/ is still being split in another branch: drop it from SPLIT_ELSEWHERE once that lands"
    return [
        pytest.param(name, marks=[pytest.mark.xfail(strict=False, reason=reason.format(name))], id=name)
        if name in SPLIT_ELSEWHERE
        else pytest.param(name, id=name)
        for name in names
    ]


def test_the_index_facade_only_wires_the_stages():
    """`Index` opens an index and hands each query stage's output to the next: at most 200 lines."""
    tree = ast.parse((PACKAGE / "search" / "index.py").read_text(encoding="utf-8"))
    (index,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Index"]
    assert index.end_lineno - index.lineno + 1 <= 200


@pytest.mark.parametrize("room", rooms())
def test_no_function_over_80_lines_and_no_module_over_500(room):
    paths = [path for _, path, _ in house_modules() if path.relative_to(PACKAGE).parts[0].removesuffix(".py") == room]
    found = oversized(paths)
    assert not found, "over the house's bounds:\n" + "\n".join(found)


@pytest.mark.parametrize("folder", ["benchmarks", "docs", "tests"])
def test_the_same_bounds_hold_for_the_benchmarks_docs_scripts_and_tests(folder):
    found = oversized(sorted((ROOT / folder).rglob("*.py")))
    assert not found, "over the house's bounds:\n" + "\n".join(found)


def module_level_imports(tree):
    """The import statements that run when the module is imported: everywhere but inside functions."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            pending.extend(ast.iter_child_nodes(node))


def import_graph():
    """Module -> the harmosearch modules it imports at module level. `from package import name`
    points at the submodule package.name when there is one, else at the package."""
    modules = {name: (path, is_package) for name, path, is_package in house_modules()}
    graph = {}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]
        targets = set()
        for node in module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    base = f"{anchor}.{base}" if base else anchor
                wanted = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in wanted:
                while target and target not in modules:  # `import harmosearch.x.y` where y is a name
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def import_circles(graph):
    """One circle (a list of modules, the first repeated at the end) through each group of modules
    that import each other, found by depth-first search."""
    circles, done = [], set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path, stack = [], set(), [(start, iter(sorted(graph[start])))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, targets = stack[-1]
            target = next(targets, None)
            if target is None:
                stack.pop()
                on_path.discard(path.pop())
                done.add(node)
            elif target in on_path:
                circle = [*path[path.index(target) :], target]
                if not any(set(circle) <= set(known) for known in circles):
                    circles.append(circle)
            elif target not in done:
                path.append(target)
                on_path.add(target)
                stack.append((target, iter(sorted(graph[target]))))
    return circles


def test_import_circles_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(graph) == [["a", "b", "c", "a"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []


def test_import_graph_resolves_relative_and_submodule_imports():
    graph = import_graph()
    assert "harmosearch.synth.scenes" in graph["harmosearch.synth"]
    assert "harmosearch.errors" in graph["harmosearch.config.fields"]
    assert "harmosearch.train.distributed" not in graph["harmosearch.train.loop"]  # imported inside functions


def test_no_import_circle_among_harmosearch_modules():
    circles = import_circles(import_graph())
    assert not circles, "modules that import each other:\n" + "\n".join(" -> ".join(c) for c in circles)
