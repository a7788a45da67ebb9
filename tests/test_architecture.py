"""The package's folder tree is its architecture, and stays so: no import circle, each part imports only the parts
below it (``docs/architecture.md`` draws the same layers), no flat folder of more than 12 modules, no module over
600 lines. Imports are read from the source, those inside functions included, so a lazy import cannot hide a
circle."""

import ast
from pathlib import Path

import lerobot_fastwam

PACKAGE = Path(lerobot_fastwam.__file__).parent

# A part is a sub-package or a top-level module. A part may import only parts of a lower layer.
LAYERS = [
    {"safety", "optim", "rtc", "encoders", "sim"},  # leaves: import nothing of the package
    {"data"},  # camera tiling, latent statistics, the latent cache: encoders, safety
    {"configuration_fastwam"},  # the config every part below the face is built from
    {"network"},
    {"checkpoints"},
    {"modeling_fastwam", "processor_fastwam", "plugin"},  # the LeRobot face
    {"__init__"},  # the public names; importing it installs the plugin
    {"tools", "testing"},  # may import everything; nothing imports them
]
LAYER = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
MAX_MODULES_PER_FOLDER = 12
MAX_LINES = 600


def module_imports(package: Path) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}`` for every module under ``package`` (dotted names)."""
    root = package.name

    def name_of(path: Path) -> str:
        parts = path.relative_to(package.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name_of(p): p for p in package.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                if base == root or base.startswith(root + "."):
                    for alias in node.names:  # `from pkg import submodule` imports that module
                        targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name == root or a.name.startswith(root + ".")}
        graph[module] = {t for t in targets if t in modules} - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a part from its own layer or a higher one."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if part_of(module) != part_of(target) and LAYER[part_of(target)] >= LAYER[part_of(module)]
    )


def test_no_import_circle_between_modules_or_parts():
    graph = module_imports(PACKAGE)
    assert len(graph) > 40  # the walk found the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    parts: dict[str, set[str]] = {}
    for module, targets in graph.items():
        parts.setdefault(part_of(module), set()).update(part_of(t) for t in targets if part_of(t) != part_of(module))
    assert find_cycle(parts) is None, " -> ".join(find_cycle(parts))


def test_each_part_imports_only_parts_of_lower_layers():
    graph = module_imports(PACKAGE)
    unknown = {part_of(m) for m in graph} - set(LAYER)
    assert not unknown, f"parts without a layer in LAYERS (and in docs/architecture.md): {sorted(unknown)}"
    upward = upward_imports(graph)
    assert not upward, "imports of a part from its own or a higher layer:\n" + "\n".join(upward)


def test_the_network_imports_only_the_config_of_the_rest():
    graph = module_imports(PACKAGE)
    outside = {t for m, ts in graph.items() if part_of(m) == "network" for t in ts if part_of(t) != "network"}
    assert outside == {"lerobot_fastwam.configuration_fastwam"}


def test_no_flat_folder_over_12_modules_and_no_module_over_600_lines():
    for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= MAX_MODULES_PER_FOLDER, f"{folder}: {len(modules)} modules"
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long


def test_the_checks_find_a_lazy_import_circle_and_an_upward_import(tmp_path):
    package = tmp_path / "lerobot_fastwam"
    (package / "network").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "network" / "__init__.py").write_text("")
    (package / "configuration_fastwam.py").write_text("def f():\n    from .network import model\n")
    (package / "network" / "model.py").write_text("from ..configuration_fastwam import f\n")
    graph = module_imports(package)
    assert find_cycle(graph) == [
        "lerobot_fastwam.configuration_fastwam",
        "lerobot_fastwam.network.model",
        "lerobot_fastwam.configuration_fastwam",
    ]
    assert upward_imports(graph) == ["lerobot_fastwam.configuration_fastwam -> lerobot_fastwam.network.model"]


def test_the_names_users_and_checkpoints_rely_on_still_resolve():
    """Public imports, the console script, and the registry names that saved configs and processors record."""
    from importlib.metadata import entry_points

    from lerobot.configs import PreTrainedConfig
    from lerobot.optim import OptimizerConfig
    from lerobot.processor import ProcessorStepRegistry

    from lerobot_fastwam import FastWAMConfig, FastWAMPolicy, default_features, make_fastwam_pre_post_processors
    from lerobot_fastwam.tools.cli import main

    assert FastWAMPolicy.config_class is FastWAMConfig and callable(make_fastwam_pre_post_processors)
    assert default_features(7, 8, (32, 64))[1]["action"].shape == (7,)
    (script,) = entry_points(group="console_scripts", name="lerobot-fastwam")
    assert script.load() is main
    assert PreTrainedConfig._choice_registry["fastwam"] is FastWAMConfig
    for name in ("fastwam_plugin_camera_resize", "fastwam_plugin_action_guard", "fastwam_plugin_current_state"):
        assert ProcessorStepRegistry.get(name).__module__.startswith("lerobot_fastwam.")
    assert {"fastwam_fused_adamw", "fastwam_adamw8bit"} <= set(OptimizerConfig._choice_registry)
