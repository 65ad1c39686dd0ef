"""Ablation studies: a base config, named variants of ``--set`` overrides, several seeds.

``plan_runs`` turns a variants file into one :class:`RunSpec` per variant x seed,
``run_all`` trains and evaluates them (skipping finished runs, resuming interrupted ones) and
``write_report`` aggregates their metrics into ``results.json``, ``results.md`` and
``results.png``. ``tools/ablate.py`` is the command line.
"""
from .report import aggregate, format_markdown, write_report
from .runner import run_all
from .spec import RunSpec, plan_runs, read_overrides_file

__all__ = ["RunSpec", "aggregate", "format_markdown", "plan_runs", "read_overrides_file",
           "run_all", "write_report"]
