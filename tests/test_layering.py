"""The layers of the package, read from the folders alone.

Every `import` and `from ... import` in src/vq4all (module level and inside functions) is
resolved against the file tree: the import path is the folder path, so no packaging metadata is
needed to see who imports whom. Layers:
    top      vq4all/__init__, __main__, api, cli, demo: may import anything
    zoo      vq4all/zoo/: core only (the zoo is one user of the API, nothing special)
    kernels  vq4all/kernels/: core only
    hw       vq4all/hw/ (rtl, sim, synth, traffic, layer_inputs): core only
    core     every other module of vq4all/: core only
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
TOP = {"vq4all", "vq4all.__main__", "vq4all.api", "vq4all.cli", "vq4all.demo"}
ALLOWED = {"core": {"core"}, "kernels": {"core", "kernels"}, "hw": {"core", "hw"}, "zoo": {"core", "zoo"}}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str, root: Path) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path, root: Path) -> set[str]:
    """Modules of the tree that `path` imports (`from a import b` counts a.b when b is a module)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            modules = {f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}", root)}
            found.update(modules)
            if len(modules) < len(node.names):  # some names are attributes of `base` itself
                found.add(base)
    return {m for m in found if m.split(".")[0] == "vq4all" and is_module(m, root)}


def layer(name: str) -> str:
    if name in TOP:
        return "top"
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("zoo", "kernels", "hw") else "core"


def violations(root: Path) -> list[str]:
    out = []
    for path in sorted((root / "vq4all").rglob("*.py")):
        name = module_name(path, root)
        src_layer = layer(name)
        if src_layer == "top":
            continue
        for target in sorted(imports_of(path, root)):
            if layer(target) not in ALLOWED[src_layer] | {src_layer}:
                out.append(f"{name} ({src_layer}) imports {target} ({layer(target)})")
    return out


def test_every_import_respects_the_layers():
    assert violations(SRC) == []


def test_the_reader_sees_real_imports(tmp_path):
    """The checker itself: relative, absolute and in-function imports across layers are caught,
    and it sees the real edges of the tree (kernels/loader imports core's decode)."""
    pkg = tmp_path / "vq4all"
    for folder in ("", "hw", "kernels", "hw/rtl"):
        (pkg / folder).mkdir(parents=True, exist_ok=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "reference.py").write_text("def f():\n    from .hw.rtl import engine\n")
    (pkg / "hw" / "rtl" / "engine.py").write_text("from ...kernels import gemm\nfrom vq4all import reference\n")
    (pkg / "kernels" / "gemm.py").write_text("import vq4all.hw.rtl.engine\n")
    assert violations(tmp_path) == [
        "vq4all.hw.rtl.engine (hw) imports vq4all.kernels.gemm (kernels)",
        "vq4all.kernels.gemm (kernels) imports vq4all.hw.rtl.engine (hw)",
        "vq4all.reference (core) imports vq4all.hw.rtl.engine (hw)",
    ]
    assert "vq4all.decode" in imports_of(SRC / "vq4all" / "kernels" / "loader.py", SRC)
    assert "vq4all.hw.rtl.config" in imports_of(
        SRC / "vq4all" / "hw" / "sim" / "streams.py", SRC
    ) or "vq4all.reference" in imports_of(SRC / "vq4all" / "hw" / "sim" / "streams.py", SRC)
