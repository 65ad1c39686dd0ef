"""What an ablation runs: variants and test sets read from YAML, one spec per run.

A run's directory is ``OUTPUT/runs/<variant>/seed<S>``. Its ``run.json`` records the spec
it was started with; a later invocation whose spec for that directory differs (an edited
variant, another base config) is refused rather than mixing results of two definitions.
"""
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Sequence, Tuple

import yaml

from dcn_det.config import ConfigError, load_config

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
DEFAULT_TEST = "test"


@dataclass(frozen=True)
class RunSpec:
    """One training run of an ablation and the test sets it is evaluated on.

    Attributes:
        variant: variant name (a key of the variants file).
        seed: ``runtime.seed`` of the run.
        config: path of the base config.
        overrides: the variant's ``KEY=VALUE`` strings, then ``runtime.seed`` and
            ``runtime.output_dir`` (the run directory).
        tests: test-set name -> extra overrides for its evaluation only (``DEFAULT_TEST``
            maps to ``[]``: the config's own ``data.test``, evaluated by training itself).
        run_dir: the run's output directory.
    """

    variant: str
    seed: int
    config: str
    overrides: Tuple[str, ...]
    tests: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    run_dir: str = ""

    def to_json(self) -> Dict:
        """The spec as plain JSON data (tuples become lists)."""
        d = asdict(self)
        d["overrides"] = list(self.overrides)
        d["tests"] = {k: list(v) for k, v in self.tests.items()}
        return d

    @classmethod
    def from_json(cls, data: Dict) -> "RunSpec":
        return cls(variant=data["variant"], seed=int(data["seed"]), config=data["config"],
                   overrides=tuple(data["overrides"]),
                   tests={k: tuple(v) for k, v in data["tests"].items()},
                   run_dir=data["run_dir"])

    def test_dir(self, test: str) -> str:
        """Where the metrics of test set ``test`` go (the run directory for the default)."""
        return self.run_dir if test == DEFAULT_TEST else os.path.join(self.run_dir,
                                                                       f"test_{test}")


def read_overrides_file(path: str, what: str) -> Dict[str, List[str]]:
    """Reads a YAML mapping ``name -> [KEY=VALUE, ...]`` (variants or test sets), in order.

    Args:
        path: the YAML file (read with ``yaml.safe_load``).
        what: ``"variant"`` or ``"test set"``, for error messages.

    Raises:
        ConfigError: unreadable file, not a non-empty mapping, a bad name, or a value that is
            not a list of ``KEY=VALUE`` strings; the message names the file and the entry.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what}s file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: must be a non-empty mapping of {what} name -> list of "
                          f"KEY=VALUE overrides, got {type(data).__name__}")
    out: Dict[str, List[str]] = {}
    for name, items in data.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{path}: {what} name {name!r} must be a string of letters, "
                              "digits and _.+- (it names a directory)")
        if items is None:
            items = []
        if not isinstance(items, list) or not all(isinstance(s, str) and "=" in s
                                                  for s in items):
            raise ConfigError(f"{path}: {what} {name!r} must be a list of KEY=VALUE strings "
                              f"(as --set takes), got {items!r}")
        out[name] = list(items)
    return out


def plan_runs(config: str, variants: Dict[str, Sequence[str]], seeds: Sequence[int],
              output_dir: str, tests: Dict[str, Sequence[str]] = None) -> List[RunSpec]:
    """One :class:`RunSpec` per variant x seed, each config validated before anything runs.

    Args:
        config: the base config file.
        variants: variant name -> overrides; the first variant is the baseline.
        seeds: the seeds (distinct ints).
        output_dir: the ablation's directory.
        tests: extra test sets, name -> overrides applied on top of the variant's for that
            evaluation only. The config's own ``data.test`` is always evaluated, as ``test``.

    Raises:
        ConfigError: an invalid variant or test override (the message names the variant and
            the key), duplicate seeds, or a test set named ``test``.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct integers, got {list(seeds)}")
    tests = dict(tests or {})
    if DEFAULT_TEST in tests:
        raise ConfigError(f"test set name {DEFAULT_TEST!r} is reserved for the config's own "
                          "data.test")
    all_tests = {DEFAULT_TEST: ()}
    all_tests.update({k: tuple(v) for k, v in tests.items()})
    runs = []
    for name, overrides in variants.items():
        for test, extra in all_tests.items():
            try:
                load_config(config, [*overrides, *extra])
            except ConfigError as e:
                where = f"variant {name!r}" + (f", test set {test!r}" if extra else "")
                raise ConfigError(f"{where}: {e}") from None
        for seed in seeds:
            run_dir = os.path.join(output_dir, "runs", name, f"seed{seed}")
            runs.append(RunSpec(
                variant=name, seed=int(seed), config=os.path.abspath(config),
                overrides=(*overrides, f"runtime.seed={int(seed)}",
                           f"runtime.output_dir={json.dumps(os.path.abspath(run_dir))}"),
                tests=all_tests, run_dir=os.path.abspath(run_dir)))
    return runs
