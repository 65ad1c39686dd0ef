"""A plain ``pip install .`` (no dev extras) has everything the package imports."""
import ast
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "dcn_det")
# import name -> the install_requires entry that provides it
REQUIRED = {"torch": "torch", "numpy": "numpy", "yaml": "pyyaml", "pycocotools": "pycocotools",
            "cv2": "opencv-python", "tensorboard": "tensorboard", "defusedxml": "defusedxml",
            "tqdm": "tqdm"}
# imported only inside the functions that need them, and said so when missing
OPTIONAL = {"onnx", "onnxscript", "onnxruntime", "torchvision"}
DEV_ONLY = {"pytest", "onnx", "onnxscript", "onnxruntime"}
# Modules of an optional path: they import its packages at their top, and are themselves
# imported only inside the functions of that path (checked below).
LAZY_MODULES = {os.path.join("dcn_det", "export", "onnx_ops.py"): "dcn_det.export.onnx_ops"}


@functools.lru_cache(maxsize=None)
def _trees():
    """(path, syntax tree) of every module of dcn_det, parsed once for all the tests here."""
    trees = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                trees.append((path, ast.parse(open(path, encoding="utf-8").read(), path)))
    return tuple(trees)


@functools.lru_cache(maxsize=None)
def _imports():
    """(file, top-level module name, at module level?) for every absolute import in dcn_det."""
    found = []
    for path, tree in _trees():
        module_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                found.append((os.path.relpath(path, ROOT), n, id(node) in module_level))
    return tuple(found)


def _module_imports():
    """(file, top-level module name, at module level?), the lazy modules' own imports aside."""
    for f, name, module_level in _imports():
        if f not in LAZY_MODULES:
            yield f, name.split(".")[0], module_level


def _third_party(top):
    return top not in sys.stdlib_module_names and top != "dcn_det"


def test_module_level_imports_are_install_requirements():
    found = {(f, top) for f, top, module_level in _module_imports()
             if module_level and _third_party(top)}
    assert found, "the walk found no imports"
    assert {top for _, top in found} <= set(REQUIRED), sorted(
        (f, top) for f, top in found if top not in REQUIRED)


def test_nothing_in_the_package_needs_pytest_or_onnx_at_import_time():
    for f, top, module_level in _module_imports():
        assert top != "pytest", f"{f} imports pytest"
        if module_level:
            assert top not in DEV_ONLY, f"{f} imports {top} at import time"
        elif _third_party(top):
            assert top in set(REQUIRED) | OPTIONAL, f"{f} imports {top}"


def test_lazy_modules_are_imported_only_inside_functions():
    lazy = set(LAZY_MODULES.values())
    parents = {m.rsplit(".", 1)[0] for m in lazy}
    for f, name, module_level in _imports():
        if module_level:
            assert name not in lazy, f"{f} imports {name} at import time"
    # "from dcn_det.export import onnx_ops" names the module through its parent package
    for path, tree in _trees():
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module in parents:
                assert not {f"{node.module}.{a.name}" for a in node.names} & lazy, path


def test_install_requires_lists_every_requirement():
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    setup_call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                      and getattr(n.func, "id", None) == "setup")
    kwargs = {kw.arg: kw.value for kw in setup_call.keywords}
    install_requires = set(ast.literal_eval(kwargs["install_requires"]))
    assert set(REQUIRED.values()) <= install_requires
    assert not install_requires & DEV_ONLY
    assert "dev" in ast.literal_eval(kwargs["extras_require"])


def test_every_package_folder_is_found_by_setup():
    # setup.py uses find_packages, which skips a folder without __init__.py: a non-editable
    # install would then lack it (an editable one, and the tests, would not notice)
    from setuptools import find_packages
    found = set(find_packages(ROOT, include=["dcn_det", "dcn_det.*"]))
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if any(f.endswith(".py") for f in files):
            name = os.path.relpath(folder, ROOT).replace(os.sep, ".")
            assert name in found, f"{name} has no __init__.py: pip install . would leave it out"
