"""The layers of the library, low to high, and a check that no import points up (so no two layers
import each other either). A module may import its own layer or any lower one. Imports under ``if TYPE_CHECKING:`` count too:
a type named from a higher layer is still a dependency on it.
"""
import ast
from collections import defaultdict
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "leaml"

# low -> high; a module's layer is its subpackage, or its own name for top-level modules
LAYERS = [
    {"leaml", "config", "records", "storage", "media", "prompts", "fingerprint", "jobs", "streaming"},
    {"data"},
    {"models"},
    {"train"},
    {"evaluate", "plan"},
    {"pretrain"},
    {"pipeline"},
    {"serve"},
    {"cli"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}

# Known upward imports, each with why it is still here; the list may only shrink.
ALLOWED_UP = {
    ("leaml.models.builders", "leaml.train.config"):
        "MediaCaps lives with the training settings; builders applies it to processors",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "leaml"


def imports() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in LIBRARY.rglob("*.py"):
        mod = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "leaml":
                edges[mod].add(node.module)
            elif isinstance(node, ast.Import):
                edges[mod] |= {a.name for a in node.names if a.name.split(".")[0] == "leaml"}
    return edges


def test_every_module_has_a_layer():
    assert {layer(m) for m in imports()} <= RANK.keys()


def test_no_import_points_to_a_higher_layer():
    up = {(a, b) for a, targets in imports().items() for b in targets if RANK[layer(b)] > RANK[layer(a)]}
    assert up <= ALLOWED_UP.keys(), sorted(up - ALLOWED_UP.keys())
