"""The command-line tools, one module each, with ``main(argv=None)`` (raises on errors) and
``run(argv=None)`` (the installed command: errors as one line and an exit code).

Installed as the console commands ``dcn-X`` by ``setup.py`` (``setup_helpers.CONSOLE_SCRIPTS``);
``tools/X.py`` in a source checkout and ``python -m dcn_det.tools.X`` run the same code.
"""
