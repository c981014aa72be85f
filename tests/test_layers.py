"""The layers docs/architecture.md draws are the layers the code has: no module imports from a layer
above its own, every folder of the package belongs to a layer, and no modules import each other in
a circle. Read from the source (every import statement, also those inside functions)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import fedcare

PACKAGE = Path(fedcare.__file__).parent
DOCS = PACKAGE.parents[1] / "docs" / "architecture.md"


def documented_layers() -> list[tuple[str, str]]:
    """(layer, folder) from the first code block under '## Layers', top layer first."""
    text = DOCS.read_text()
    section = text[text.index("\n## Layers"):]
    block = section[section.index("```") + 3:]
    block = block[block.index("\n") + 1:block.index("```")]
    layers = [(m.group(1), m.group(2).rstrip("/")) for line in block.splitlines()
              if (m := re.match(r"\s*([a-z]+)\s+([a-z_]+/)\s", line))]
    assert len(layers) >= 7, block
    return layers


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_only(tree: ast.AST) -> set[int]:
    """The import statements under `if TYPE_CHECKING:`: annotations only, never run."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            out |= {id(n) for part in node.body for n in ast.walk(part)}
    return out


def imports(name: str, path: Path, known: set[str], run_only: bool = False) -> set[str]:
    """The fedcare modules this module imports, at any depth of its code; with `run_only`, not those
    only type checkers read (the package uses absolute imports only: a relative one fails this)."""
    found = set()
    tree = ast.parse(path.read_text())
    skip = _type_only(tree) if run_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fedcare")}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{name}: relative import of {node.module}"
            if (node.module or "").startswith("fedcare"):
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in known else node.module)
    return found & known


def layer_of(module: str, layers: dict[str, int]) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__",):
        return layers["interfaces"]  # the package's facade (fedcare.simulate) and `python -m fedcare`
    return layers[parts[1]]


def test_every_folder_of_the_package_is_a_documented_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    documented = {folder for _, folder in documented_layers()}
    assert folders == documented, (folders, documented)
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules outside any layer: {loose}"


def test_no_module_imports_from_a_layer_above_its_own():
    order = [folder for _, folder in reversed(documented_layers())]  # core first
    rank = {folder: i for i, folder in enumerate(order)}
    found = modules()
    upward = []
    for name, path in found.items():
        own = layer_of(name, rank)
        for target in imports(name, path, set(found)):
            if layer_of(target, rank) > own:
                upward.append(f"{name} imports {target}")
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    """Of the imports that run (a section's type hint naming the whole config is not a circle)."""
    found = modules()
    graph = {name: imports(name, path, set(found), run_only=True) - {name} for name, path in found.items()}
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            raise AssertionError("import circle: " + " → ".join(trail[trail.index(node):] + [node]))
        if node in done:
            return
        for target in sorted(graph[node]):
            visit(target, trail + [node])
        done.add(node)

    for name in sorted(graph):
        visit(name, [])


def test_the_layer_check_finds_an_upward_import(tmp_path):
    """The check itself can fail: an import of the interfaces from the core is caught."""
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from fedcare.interfaces.api import simulate\n")
    found = modules()
    rank = {folder: i for i, folder in enumerate(f for _, f in reversed(documented_layers()))}
    targets = imports("fedcare.core.probe", path, set(found))
    assert targets == {"fedcare.interfaces.api"}
    assert layer_of("fedcare.interfaces.api", rank) > layer_of("fedcare.core.probe", rank)
