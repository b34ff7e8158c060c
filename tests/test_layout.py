"""The package layout holds: imports go one way between the stages, the top-level names stay
the documented ones, and the page templates and static files are package data."""

from __future__ import annotations

import ast
from importlib.resources import files
from pathlib import Path

import mmbench

PACKAGE = Path(mmbench.__file__).resolve().parent

# lower first; a module may import its own stage and the stages before it (docs/architecture.md)
STAGES = ["core", "data", "models", "evaluation", "training", "board", "reproduce", "cli"]

# The upward imports the layout still has, each inside a function (never at import time):
# (importing module, imported module) -> why.
UPWARD = {
    ("mmbench.data.tasks", "mmbench.evaluation.metrics"): "a task spec's metric names are checked against the metric table",
    ("mmbench.data.datasets.coco", "mmbench.models.encoders.pretrained"): "frozen image/text features are encoded on load",
    # COCO's image and text features moved to their own module (coco.py split along its concerns)
    ("mmbench.data.datasets.coco_features", "mmbench.models.encoders.pretrained"):
        "frozen image/text features are encoded on load",
    ("mmbench.data.datasets.hf", "mmbench.models.encoders.pretrained"): "frozen image/text features are encoded on load",
    ("mmbench.data.datasets.text", "mmbench.models.encoders.pretrained"): "frozen text features are encoded on load",
    # frozen torchvision / torchaudio backbones (issue 37), encoded on load like the two above
    ("mmbench.data.datasets.coco_features", "mmbench.models.encoders.backbones"):
        "frozen torchvision image features are encoded on load",
    ("mmbench.data.datasets.hf", "mmbench.models.encoders.backbones"): "frozen torchvision image features are encoded on load",
    ("mmbench.data.datasets.clips", "mmbench.models.encoders.backbones"): "frozen torchaudio speech features are encoded on load",
    ("mmbench.data.datasets.avmnist", "mmbench.models.encoders.backbones"):
        "frozen torchaudio speech features are encoded on load",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> int | None:
    """Index of the module's stage in STAGES; None for the root package (`__version__` only)."""
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 else None


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported mmbench module, imported at module level) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    top_level |= {id(n) for node in tree.body if isinstance(node, (ast.If, ast.Try)) for n in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from mmbench.x import y` names module mmbench.x.y when y is one
            targets = [f"{name}.{a.name}" if _is_module(f"{name}.{a.name}") else name for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found += [(t, id(node) in top_level) for t in targets if t == "mmbench" or t.startswith("mmbench.")]
    return found


def test_imports_go_one_way_between_the_stages():
    upward, used = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        mine = _stage(module)
        assert mine is not None or module == "mmbench", f"{module}: not in a stage of {STAGES}"
        for target, at_import in _imports(path, module):
            theirs = _stage(target)
            if theirs is None or mine is None or theirs <= mine:
                continue
            if (module, target) in UPWARD and not at_import:
                used.add((module, target))
                continue
            upward.append(f"{module} imports {target}{' at import time' if at_import else ''}")
    assert not upward, "imports that climb up the stages:\n" + "\n".join(upward)
    assert used == set(UPWARD), f"listed upward imports that no longer exist: {set(UPWARD) - used}"


def test_the_root_package_imports_nothing_and_every_stage_says_what_it_owns():
    assert _imports(PACKAGE / "__init__.py", "mmbench") == []
    for stage in STAGES:
        init = PACKAGE / stage / "__init__.py"
        if init.exists():
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
            assert doc and len(doc) > 60, f"{init}: no docstring saying what the package owns"


def test_the_top_level_names_are_the_documented_ones():
    expected = {"DATASETS", "ENCODERS", "FUSIONS", "METRICS", "get_task", "task_names", "load_task_spec", "TaskSpec",
                "save_retrieval_program", "export_submission",
                "load_dataset", "Split", "Batch", "collate", "TrainConfig", "train", "load_model", "MultimodalModel",
                "MMBenchError"}
    assert set(mmbench._LAZY) == expected
    for name in expected:
        obj = getattr(mmbench, name)
        assert getattr(obj, "__name__", name) == name or name.isupper(), name
    assert mmbench.load_dataset("synthetic", n_samples=40).load_split("train").ids  # the registry fills on its own
    assert "concat" in mmbench.FUSIONS.names() and mmbench.get_task("synthetic-synergy").name == "synthetic-synergy"


def test_templates_and_static_files_are_package_data():
    import jinja2

    from mmbench.board.report import static_text, template_loader

    board = files("mmbench.board")
    templates = {"base.html.j2", "macros.j2", "board.html.j2", "report.html.j2", "report.md.j2", "site_index.j2",
                 "site_task.j2", "site_nav.j2", "task.j2"}
    assert {p.name for p in board.joinpath("templates").iterdir()} >= templates
    assert set(template_loader().list_templates()) >= templates
    env = jinja2.Environment(loader=template_loader())
    for name in templates:
        env.get_template(name)  # parses
    assert "mmbenchSort" in static_text("sort.js") and "--accent" in static_text("report.css")
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "{% extends" not in text and "<!DOCTYPE" not in text, f"{path}: a template as a Python string"
