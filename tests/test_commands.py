"""The command-line tools: dcn_det/tools/X.py (``main``/``run``), the tools/X.py wrappers of a
source checkout and the installed ``dcn-*`` commands all run the same code."""
import ast
import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

import setup_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ("train", "test", "export", "infer", "make_synthetic", "check_dataset",
         "convert_weights", "ablate", "visualize_offsets", "analyze_offsets")


def _load_wrapper(name):
    spec = importlib.util.spec_from_file_location(f"_wrapper_{name}",
                                                  os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", TOOLS)
def test_package_main_help(name, capsys):
    module = importlib.import_module(f"dcn_det.tools.{name}")
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("name", TOOLS)
def test_wrapper_runs_the_package_code(name, capsys):
    wrapper = _load_wrapper(name)
    module = importlib.import_module(f"dcn_det.tools.{name}")
    assert wrapper.main is module.main and wrapper.run is module.run
    with pytest.raises(SystemExit) as e:
        wrapper.main(["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_every_tool_module_is_an_installed_command():
    modules = sorted(n[:-3] for n in os.listdir(os.path.join(ROOT, "dcn_det", "tools"))
                     if n.endswith(".py") and n != "__init__.py")
    assert modules == sorted(TOOLS)
    targets = {t.split(":")[0].rsplit(".", 1)[1] for t in setup_helpers.CONSOLE_SCRIPTS.values()}
    assert targets == set(TOOLS)
    for name, target in setup_helpers.CONSOLE_SCRIPTS.items():
        assert name == "dcn-" + target.split(":")[0].rsplit(".", 1)[1].replace("_", "-")


@pytest.mark.slow  # imports every tool module (torch.export, ONNX helpers, ...)
def test_setup_entry_points_name_existing_callables():
    # setup.py builds its console_scripts from setup_helpers.CONSOLE_SCRIPTS ...
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    kwargs = {kw.arg: kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
              and getattr(node.func, "id", None) == "setup" for kw in node.keywords}
    assert "entry_points" in kwargs
    assert "setup_helpers.CONSOLE_SCRIPTS" in ast.unparse(kwargs["entry_points"])
    assert "console_scripts" in ast.unparse(kwargs["entry_points"])
    # ... and each one is a function taking an optional argv
    for name, target in setup_helpers.CONSOLE_SCRIPTS.items():
        module_name, attr = target.split(":")
        func = getattr(importlib.import_module(module_name), attr)
        assert callable(func), name
        assert func.__code__.co_varnames[:1] == ("argv",), name


# Each wrapper runs as a script (``__main__``) in one fresh interpreter started outside the
# checkout: one interpreter start instead of one per tool.
_RUN_AS_SCRIPTS = """
import contextlib, io, runpy, sys
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(path, run_name="__main__")
            code = "returned"
        except SystemExit as e:
            code = e.code
    print(path, code, out.getvalue().startswith("usage:"))
"""


@pytest.mark.slow  # a subprocess
def test_tool_scripts_print_help_when_run_as_scripts():
    paths = [os.path.join(ROOT, "tools", f"{name}.py") for name in TOOLS]
    r = subprocess.run([sys.executable, "-c", _RUN_AS_SCRIPTS, *paths],
                       capture_output=True, text=True, cwd="/", timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{p} 0 True" for p in paths], r.stdout
