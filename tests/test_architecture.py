"""The package's shape: no import circles (counting imports inside functions), and `model/` stays pure."""
import ast
from pathlib import Path

import vptune

PACKAGE = Path(vptune.__file__).parent


def module_name(path: Path) -> str:
    parts = ("vptune",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """vptune modules that `name` imports anywhere in its file (module level or inside functions).

    `from .x import y` counts as importing x (or x.y when that is a module); a package's own __init__ is not
    counted as imported by its submodules (Python runs it first, but it is not an arrow in the design)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if _is_type_checking_block(node):  # imports for type hints only never run: no arrow at run time
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = 2, path.pop()
        return None

    for start in sorted(GRAPH):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_function_level_imports():
    assert "vptune.inference.evaluate" in GRAPH["vptune.training.stem_cache"]
    assert "vptune.bench" in GRAPH["vptune.cli"]  # imported inside a function


def test_no_import_circles():
    cycle = find_cycle()
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_model_imports_only_its_own_files():
    outside = {name: sorted(t for t in GRAPH[name] if not t.startswith("vptune.model"))
               for name in GRAPH if name.startswith("vptune.model")}
    assert not any(outside.values()), outside


def test_only_the_package_root_and_cli_sit_above_everything():
    importers_of_top = [name for name, targets in GRAPH.items() if "vptune" in targets]
    assert importers_of_top == []
    assert [name for name, targets in GRAPH.items() if "vptune.cli" in targets] == ["vptune.__main__"]


BACKBONE_INSIDES = {"blocks", "patch_embed", "_pos_embed", "pos_embed", "cls_token", "reg_token", "qkv", "attn",
                    "mlp", "norm_pre", "fc_norm", "rope"}
MAY_SEE_INSIDES = ("vptune.model", "vptune.backbones")  # the adapters; creating and converting backbones


def backbone_insides_read(name: str) -> list[str]:
    """`.attr` reads of a backbone's insides in module `name`, as 'line: attr'."""
    tree = ast.parse(MODULES[name].read_text())
    return [f"{node.lineno}: .{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in BACKBONE_INSIDES]


def test_only_model_and_backbones_read_a_backbones_insides():
    readers = {name: backbone_insides_read(name) for name in MODULES if not name.startswith(MAY_SEE_INSIDES)}
    assert not any(readers.values()), {name: found for name, found in readers.items() if found}


def test_the_insides_check_sees_a_read():
    assert backbone_insides_read("vptune.model.families.vit"), "the adapter reads .blocks: the check must see it"
