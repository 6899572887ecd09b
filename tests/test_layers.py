"""The layers of llp_tf/, read from the source with ast (nothing is imported): every module belongs to
one layer, imports only from its own layer or lower ones, the import graph has no cycle, and no llp_tf
module is imported inside a function (a function-level import is for an optional or slow third-party
package, never to dodge a loop). BUILD.md's Layout describes the same layers.
"""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "llp_tf"

# From the ground up; a module may import from its own layer and the ones above it in this list.
LAYERS = {
    "math": ["config", "bank", "losses", "neighbours", "propagation", "aggregation", "diffusion"],
    "model": ["backbones", "model", "evaluation", "callbacks"],
    "data": ["augment", "npz", "features", "data", "data.base", "data.arrays", "data.folders",
             "data.tfds_source", "data.sources", "data.split", "data.pipelines"],
    "training job": ["checkpoints", "distribute", "workdir", "resume", "experiment", "console", "train"],
    "finished runs": ["finished", "export", "transfer", "propagation_comparison", "propagation_sweep",
                      "analysis", "analysis.stats", "analysis.runs", "analysis.plots",
                      "analysis.report"],
}
LAYER_OF = {f"llp_tf.{name}": rank for rank, names in enumerate(LAYERS.values()) for name in names}
LAYER_NAMES = list(LAYERS)
# Above every layer of the library: the programs (tools/, installed as llp_tf.tools), and what is not
# installed at all (tests/, scripts/). The library imports none of them.
FORBIDDEN = ("llp_tf.tools", "tests", "scripts")


def module_name(path, package_root=PACKAGE):
    parts = path.relative_to(package_root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules():
    """{module name: path} of every module of llp_tf/ except the package's own __init__."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules.pop("llp_tf")  # the version string only
    return modules


def imports_of(path, name, known):
    """[(imported llp_tf module or forbidden name, line, inside a function)] of one source file.

    `from llp_tf import x` and `from llp_tf.x import y` both count as importing llp_tf.x (the longest
    prefix that is a known module); third-party imports are left out.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                candidates = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against this module's package
                    anchor = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                candidates = [f"{base}.{alias.name}" for alias in child.names]
            else:
                visit(child, inner)
                continue
            targets = {resolve(candidate, known) for candidate in candidates} - {None}
            found.extend((target, child.lineno, in_function) for target in sorted(targets))

    visit(tree, False)
    return found


def resolve(candidate, known):
    """The known module a dotted import names (its longest known prefix), a forbidden top-level name,
    or None for a third-party import."""
    parts = candidate.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in known:
            return prefix
    if any(candidate == bad or candidate.startswith(bad + ".") for bad in FORBIDDEN):
        return candidate
    if candidate.startswith("llp_tf."):
        return candidate  # an llp_tf module this test does not know: reported as undeclared
    return None


def import_graph():
    """{module: [(imported module, line, inside a function)]} of every module of llp_tf/."""
    modules = library_modules()
    known = set(modules) | {"llp_tf"}
    graph = {}
    for name, path in sorted(modules.items()):
        graph[name] = [(target, line, inner) for target, line, inner in imports_of(path, name, known)
                       if target not in (name, "llp_tf")]
    return graph


def find_cycle(graph):
    """One import cycle as [a, b, ..., a], or None."""
    state = {}  # module -> "open" while on the current path, "done" after

    def walk(node, path):
        state[node] = "open"
        for target, _, _ in graph.get(node, []):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = walk(target, path + [target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = walk(start, [start])
            if cycle:
                return cycle
    return None


def layer_problems(graph):
    """One line per import that breaks the layering."""
    problems = []
    paths = library_modules()
    for name, imports in sorted(graph.items()):
        where = paths[name].relative_to(ROOT) if name in paths else name
        if name not in LAYER_OF:
            problems.append(f"{name} belongs to no layer: add it to LAYERS in tests/test_layers.py "
                            "and to BUILD.md's Layout")
            continue
        for target, line, inner in imports:
            if any(target == bad or target.startswith(bad + ".") for bad in FORBIDDEN):
                problems.append(f"{where}:{line} imports {target}, which the library must not use")
            elif target not in LAYER_OF:
                problems.append(f"{where}:{line} imports {target}, which belongs to no layer")
            elif inner:
                problems.append(f"{where}:{line} imports {target} inside a function; import it at the top")
            elif LAYER_OF[target] > LAYER_OF[name]:
                problems.append(f"{where}:{line}: {name} ({LAYER_NAMES[LAYER_OF[name]]}) imports "
                                f"{target} ({LAYER_NAMES[LAYER_OF[target]]}), a higher layer")
    return problems


def graph_text(graph=None):
    """The import graph layer by layer: "layer:", then "  module -> imported modules" (BUILD.md)."""
    graph = import_graph() if graph is None else graph
    short = lambda name: name[len("llp_tf."):]  # noqa: E731
    lines = []
    for layer, names in LAYERS.items():
        lines.append(f"{layer}:")
        for name in names:
            targets = sorted({short(target) for target, _, _ in graph[f"llp_tf.{name}"]},
                             key=lambda target: (LAYER_OF.get(f"llp_tf.{target}", 99), target))
            lines.append(f"  {name} -> {', '.join(targets) if targets else '(nothing of llp_tf)'}")
    return "\n".join(lines) + "\n"


def test_every_module_belongs_to_exactly_one_layer():
    declared = [name for names in LAYERS.values() for name in names]
    assert len(declared) == len(set(declared)), "a module is declared in two layers"
    modules = set(library_modules())
    assert modules - set(LAYER_OF) == set(), "modules in no layer"
    assert set(LAYER_OF) - modules == set(), "layers name modules that do not exist"


def test_build_md_layout_matches_the_tree():
    """BUILD.md's Layout table names every module of llp_tf/ and only paths that exist, and its
    import graph is the one read from the source (`python -m scripts.import_graph` prints it)."""
    text = (ROOT / "BUILD.md").read_text()
    layout = text[text.index("## Layout\n"):]
    layout = layout[:layout.index("\n## ", 1)]
    listed = set()
    for row in layout.splitlines():
        if row.startswith("| `"):
            listed.update(re.findall(r"`([^`]+)`", row.split("|")[1]))
    missing_paths = sorted(path for path in listed if not (ROOT / path).exists())
    assert not missing_paths, f"BUILD.md's Layout names paths that do not exist: {missing_paths}"
    modules = {str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")} - {"llp_tf/__init__.py"}
    assert not sorted(modules - listed), "modules missing from BUILD.md's Layout table"
    assert graph_text() in layout, "BUILD.md's import graph is stale: python -m scripts.import_graph"


def test_imports_follow_the_layers():
    problems = layer_problems(import_graph())
    assert not problems, "\n".join(problems)


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_is_read_from_the_source():
    """The walker sees the edges it must: `from llp_tf import a, b`, `from llp_tf.x import name`."""
    graph = {name: {target for target, _, _ in imports} for name, imports in import_graph().items()}
    assert graph["llp_tf.propagation"] == {"llp_tf.neighbours"}
    assert graph["llp_tf.propagation_comparison"] >= {"llp_tf.diffusion", "llp_tf.propagation"}
    assert graph["llp_tf.experiment"] >= {"llp_tf.model", "llp_tf.data", "llp_tf.workdir", "llp_tf.resume"}


@pytest.mark.parametrize("source, expected", [
    ("from llp_tf import train\n", "llp_tf.bank (math) imports llp_tf.train (training job), a higher layer"),
    ("def f():\n    from llp_tf import losses\n", "imports llp_tf.losses inside a function"),
    ("import llp_tf.tools.train\n", "imports llp_tf.tools.train, which the library must not use"),
    ("from tests import reference\n", "imports tests.reference, which the library must not use"),
    ("def f():\n    import scipy.sparse\n", None),
])
def test_a_planted_import_is_caught(tmp_path, source, expected):
    """The checks on a copy of llp_tf/bank.py with one more import line."""
    package = tmp_path / "llp_tf"
    package.mkdir()
    planted = package / "bank.py"
    planted.write_text((PACKAGE / "bank.py").read_text() + "\n" + source)
    graph = import_graph()
    graph["llp_tf.bank"] = [
        (target, line, inner) for target, line, inner in imports_of(planted, "llp_tf.bank", set(graph))
        if target != "llp_tf.bank"]
    problems = layer_problems(graph)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in problem for problem in problems), problems


def test_a_planted_cycle_is_caught():
    graph = import_graph()
    graph["llp_tf.bank"] = graph["llp_tf.bank"] + [("llp_tf.model", 1, False)]
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and "llp_tf.bank" in cycle
