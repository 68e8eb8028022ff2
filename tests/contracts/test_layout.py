"""The package layout keeps its promises: no import cycle (imports inside functions count),
no dataset named outside datasets/ in the stages and the command line, and a dataset added
from another installed package works through the command line. (Configs written by the
previous version: test_mmaction.py.)"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import datatools
from datatools import datasets

PACKAGE = Path(datatools.__file__).parent
BIN = Path(sys.executable).parent


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body, each with the
    packages above it (importing a.b.c runs a/__init__ and a/b/__init__ first)."""
    known = modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets.add(mod)
                targets |= {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known}
        edges = set()
        for target in targets:
            parts = target.split(".")
            for n in range(2, len(parts) + 1):  # the root package imports nothing
                if ".".join(parts[:n]) in known:
                    edges.add(".".join(parts[:n]))
        edges.discard(name)
        graph[name] = {e for e in edges if not name.startswith(e + ".")}  # a module's own packages
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "datatools.root.state" in graph["datatools.validate.run"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def layers() -> list[set[str]]:
    """The layer order, read from ARCHITECTURE.md's `layers` block: one line per layer, lowest
    first, its packages separated by spaces."""
    text = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/ARCHITECTURE.md has no ```layers block"
    return [set(line.split("#")[0].split()) for line in block[1].splitlines() if line.split("#")[0].strip()]


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_edges(graph: dict[str, set[str]], order: list[set[str]]) -> list[str]:
    """Imports of a package in the same or a higher layer (a package's own modules excepted)."""
    rank = {pkg: n for n, members in enumerate(order) for pkg in members}
    found = []
    for module, targets in graph.items():
        here = package_of(module)
        for target in targets:
            there = package_of(target)
            if there != here and rank[there] >= rank[here]:
                found.append(f"{module} -> {target}")
    return sorted(found)


def test_dependencies_point_one_way_down_the_layers():
    graph = import_graph()
    order = layers()
    packages = {package_of(m) for m in graph} - {"datatools"}
    placed = set().union(*order)
    assert packages == placed, f"packages not in the layer table: {packages ^ placed}"
    assert not upward_edges(graph, order), "upward imports:\n" + "\n".join(upward_edges(graph, order))
    # the check can fail: the same graph against the order turned upside down
    assert upward_edges(graph, order[::-1])


def test_at_most_three_modules_sit_directly_in_the_package():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "gpu_pin.py"], flat


def test_the_cycle_finder_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / "cyc"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text('"""only a docstring"""\n')
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def later():\n    from .. import a\n    return a\n")
    graph = import_graph(pkg)
    assert graph["cyc.a"] == {"cyc.sub", "cyc.sub.b"} and graph["cyc.sub.b"] == {"cyc.a"}
    assert find_cycle(graph) == ["cyc.a", "cyc.sub.b", "cyc.a"]
    (pkg / "sub" / "b.py").write_text("def later():\n    return 1\n")
    assert find_cycle(import_graph(pkg)) is None


def dataset_words() -> re.Pattern:
    """Every registered dataset name, and the family a numbered name belongs to
    (kinetics400 -> kinetics), as words in any case."""
    words = set()
    for name in datasets.names():
        words.add(name)
        stem = name.rstrip("0123456789")
        if len(stem) >= 4:
            words.add(stem)
    words.add("something-something")
    return re.compile(r"(?<![a-z0-9])(" + "|".join(sorted(map(re.escape, words))) + ")",
                      re.IGNORECASE)


def string_literals(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_dataset_names_appear_only_in_dataset_modules():
    pattern = dataset_words()
    files = [PACKAGE / "cli" / "app.py", PACKAGE / "cli" / "options.py"] + [
        p for stage in ("acquire", "extract", "lists", "validate")
                                    for p in sorted((PACKAGE / stage).rglob("*.py"))]
    assert len(files) > 15
    found = [f"{p.relative_to(PACKAGE.parent)}:{line}: {pattern.search(text)[0]!r}"
             for p in files for line, text in string_literals(p) if pattern.search(text)]
    assert not found, "dataset names outside datatools/datasets/:\n" + "\n".join(found)
    # the check can fail: the dataset modules are full of them
    assert any(pattern.search(t) for _, t in string_literals(PACKAGE / "datasets" / "kinetics.py"))


TOY = '''
"""A toy dataset from outside datatools: one annotation file, `<class>/<file> <subset>` lines."""

from pathlib import Path

from datatools.datasets import AnnotatedVideo, Annotations, Dataset
from datatools.datasets.base import read_lines


class Toy(Dataset):
    name = "toyset"
    catalog_package = "toyset_plugin"

    def parse(self, ann_dir: Path) -> Annotations:
        path = self.find_annotation(ann_dir, ["toy.txt"])
        rows = [line.split() for line in read_lines(path) if line.strip()]
        label_map = sorted({rel.split("/")[0] for rel, _ in rows})
        ann = Annotations(self.name, label_map, str(path), files=[str(path)])
        for order, (rel, subset) in enumerate(rows):
            cls, file = rel.split("/")
            video = AnnotatedVideo(Path(file).stem, cls, label_map.index(cls), cls)
            ann.add(video, 1, subset, order, (path, order + 1, rel))
        return ann
'''

TOY_CATALOG = ('{"name": "toyset", "title": "Toy set", "num_classes": 2, "splits": 1, '
               '"expected": {"1": {"train": 2, "val": 1}}, "sources": []}')


def install_toy(tmp_path: Path) -> Path:
    """pip-installs a package with a dataset module and its catalog entry into a folder of
    its own (the test's venv stays as it is); returns that folder."""
    src = tmp_path / "toy-src"
    (src / "toyset_plugin").mkdir(parents=True)
    (src / "toyset_plugin" / "__init__.py").write_text(textwrap.dedent(TOY))
    (src / "toyset_plugin" / "toyset.json").write_text(TOY_CATALOG)
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "toyset-plugin"
        version = "1.0"

        [project.entry-points."datatools.datasets"]
        toyset = "toyset_plugin"

        [tool.setuptools.package-data]
        toyset_plugin = ["*.json"]
    '''))
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "--no-index", "--target", str(target), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return target


def test_a_dataset_from_an_installed_package_builds_lists_through_the_cli(tmp_path):
    site = install_toy(tmp_path)
    env = {"PYTHONPATH": str(site), "PATH": str(BIN)}
    root = tmp_path / "toy"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "toy.txt").write_text("Jump/a.avi train\nJump/b.avi val\nRun/c.avi train\n")
    for rel in ("Jump/a.avi", "Jump/b.avi", "Run/c.avi"):
        (root / "videos" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "videos" / rel).write_bytes(b"not probed here")

    listed = subprocess.run([str(BIN / "datatools"), "datasets", "--names"], env=env,
                            capture_output=True, text=True)
    assert listed.returncode == 0 and "toyset" in listed.stdout.split() and "ucf101" in listed.stdout
    r = subprocess.run([str(BIN / "datatools"), "toyset", "build-lists", "--root", str(root)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / "toyset_train_list_videos.txt").read_text() == "Jump/a.avi 0\nRun/c.avi 1\n"
    assert (root / "toyset_val_list_videos.txt").read_text() == "Jump/b.avi 0\n"
    assert (root / "manifest.parquet").is_file()
    # without the package on the path the dataset is unknown, and the built-in ones remain
    r = subprocess.run([str(BIN / "datatools"), "datasets", "--names"], env={"PATH": str(BIN)},
                       capture_output=True, text=True)
    assert "toyset" not in r.stdout.split() and "ucf101" in r.stdout.split()


def test_a_broken_plugin_is_named_and_skipped(tmp_path):
    site = install_toy(tmp_path)
    (site / "toyset_plugin" / "__init__.py").write_text("raise RuntimeError('half-installed')\n")
    r = subprocess.run([str(BIN / "datatools"), "datasets", "--names"],
                       env={"PYTHONPATH": str(site), "PATH": str(BIN)}, capture_output=True, text=True)
    assert r.returncode == 0 and "ucf101" in r.stdout.split()
    assert "dataset plugin 'toyset' (toyset_plugin) cannot be loaded" in r.stderr
    assert "half-installed" in r.stderr


def test_names_that_files_written_before_the_move_import_still_work():
    """Configs import `datatools.mmaction` (test_mmaction.py builds two such configs); SLURM
    worker jobs submitted before the move preload `datatools.gpu_pin` by name."""
    script = ("import datatools.gpu_pin as old, datatools.schedule.gpu_pin as new; "
              "assert old.dask_setup is new.dask_setup; "
              "print(old.device_for('datatools-worker-1', '4,5'))")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "5", r.stderr
    assert (PACKAGE / "mmaction" / "__init__.py").is_file()
    r = subprocess.run([sys.executable, "-m", "datatools", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"datatools {datatools.__version__}"
