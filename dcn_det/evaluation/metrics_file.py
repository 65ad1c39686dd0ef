"""``metrics.json``: one JSON line per evaluation, appended (detectron2-style).

Each line is one evaluation, flattened one level::

    {"iteration": 200, "bbox/AP": 31.2, "bbox/AP50": 55.0, ..., "bbox_per_class/disc": 40.1}
    {"iteration": 400, "voc/mAP": 61.0, "voc/mAP_07": 59.8, "voc/per_class": {...}, ...}

A key is ``SECTION/KEY``: the section is a top-level key of the evaluator's result
(``bbox``, ``bbox_per_class``, ``voc``) and everything after the first ``/`` is the key inside
it, so class names may contain ``/``; values that are mappings or lists in the result (VOC's
``per_class``, ``classes_without_gt``) stay as they are. ``iteration`` is the number of
training iterations done when the model was evaluated (``null`` for ``tools/test.py``, whose
lines carry ``"checkpoint"``: the file evaluated instead). NaN (a metric without ground truth)
is written as ``NaN``, as Python's ``json`` does.

Writing rewrites the file atomically (``io/atomic.py``) with the new line last; a line with the
same ``(iteration, checkpoint)`` as the new one is replaced, so re-evaluating after a resume
never duplicates a line. A resumed training run first drops the lines of iterations after its
checkpoint (:func:`drop_lines_after`): it recomputes them.

A ``metrics.json`` of an older dcn_det (one indented JSON document, no ``iteration``) reads as
a single line with ``iteration`` None.
"""
import json
import os
from typing import Any, Dict, List, Optional

from dcn_det.io.atomic import write_text

FILE_NAME = "metrics.json"
_NO_ITERATION = object()  # "any iteration" for read_metrics


def flatten_metrics(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """``{"bbox": {"AP": 1.0}}`` -> ``{"bbox/AP": 1.0}`` (one level; see the module docstring).

    Raises:
        ValueError: a section is not a mapping, or a key contains no section.
    """
    flat: Dict[str, Any] = {}
    for section, values in metrics.items():
        if not isinstance(values, dict):
            raise ValueError(f"metrics section {section!r} must be a mapping, got "
                             f"{type(values).__name__}")
        if "/" in str(section):
            raise ValueError(f"metrics section names cannot contain '/', got {section!r}")
        for key, value in values.items():
            flat[f"{section}/{key}"] = value
    return flat


def unflatten_metrics(line: Dict[str, Any]) -> Dict[str, Any]:
    """The evaluator's nested result of one line (``iteration``, ``checkpoint`` left out)."""
    nested: Dict[str, Any] = {}
    for key, value in line.items():
        if "/" not in key:
            continue
        section, name = key.split("/", 1)
        nested.setdefault(section, {})[name] = value
    return nested


def _from_legacy(document: Dict[str, Any], path: str) -> Dict[str, Any]:
    try:
        return {"iteration": None, **flatten_metrics(document)}
    except ValueError as e:
        raise ValueError(f"{path}: neither metrics lines nor an older metrics document: {e}") \
            from None


def read_lines(path: str) -> List[Dict[str, Any]]:
    """Every evaluation in ``path``, oldest first, as flat dicts (``[]`` if it does not exist).

    Raises:
        ValueError: a line is not a JSON object (names the file and the line number).
    """
    if not os.path.isfile(path):
        return []
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    try:  # an older dcn_det wrote one (indented) document of nested sections
        legacy = json.loads(text)
    except json.JSONDecodeError:
        legacy = None
    if isinstance(legacy, dict) and "iteration" not in legacy:
        return [_from_legacy(legacy, path)]
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {number} is not JSON ({e.msg}): {raw[:80]!r}") \
                from None
        if not isinstance(line, dict) or "iteration" not in line:
            raise ValueError(f"{path}: line {number} is not a metrics line (a JSON object "
                             f"with an 'iteration'): {raw[:80]!r}")
        lines.append(line)
    return lines


def read_metrics(path: str, iteration: Any = _NO_ITERATION) -> Optional[Dict[str, Any]]:
    """The nested metrics of the last line of ``path``, or of its line for ``iteration``.

    Args:
        path: a ``metrics.json``.
        iteration: the iteration whose evaluation is wanted; omitted = the last line.

    Returns:
        ``{"bbox": {...}, "bbox_per_class": {...}}`` or ``{"voc": {...}}`` (what the evaluator
        returned), or None when the file is missing or has no such line.
    """
    lines = read_lines(path)
    if iteration is not _NO_ITERATION:
        lines = [line for line in lines if line.get("iteration") == iteration]
    return unflatten_metrics(lines[-1]) if lines else None


def read_final_training_metrics(path: str, max_iter: int) -> Optional[Dict[str, Any]]:
    """The nested metrics of a training's final evaluation: its line at ``max_iter``, or the
    single document an older dcn_det wrote after training; None when there is neither (a
    ``tools/test.py`` line, which names its ``checkpoint``, does not count)."""
    lines = [line for line in read_lines(path) if line.get("iteration") == max_iter
             or (line.get("iteration") is None and "checkpoint" not in line)]
    return unflatten_metrics(lines[-1]) if lines else None


def _line_key(line: Dict[str, Any]):
    return line.get("iteration"), line.get("checkpoint")


def _write_lines(path: str, lines: List[Dict[str, Any]], root: str) -> str:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    return write_text(path, text, root=root, what="metrics")


def append_metrics(output_dir: str, metrics: Dict[str, Any], iteration: Optional[int],
                   checkpoint: Optional[str] = None) -> str:
    """Adds one evaluation as the last line of ``output_dir/metrics.json``; returns the path.

    Args:
        output_dir: the run's (or test's) output directory.
        metrics: the evaluator's nested result (``{"bbox": ..., "bbox_per_class": ...}``).
        iteration: training iterations done; None when unknown (``tools/test.py``).
        checkpoint: the evaluated file, for evaluations outside training.

    A line with the same ``(iteration, checkpoint)`` is replaced (see the module docstring).
    """
    path = os.path.join(output_dir, FILE_NAME)
    line: Dict[str, Any] = {"iteration": iteration}
    if checkpoint is not None:
        line["checkpoint"] = checkpoint
    line.update(flatten_metrics(metrics))
    lines = [old for old in read_lines(path) if _line_key(old) != _line_key(line)]
    return _write_lines(path, lines + [line], output_dir)


def drop_lines_after(output_dir: str, iteration: int) -> int:
    """Removes the lines of training iterations after ``iteration``; returns how many.

    A run resumed from the checkpoint of ``iteration`` evaluates those iterations again.
    Lines without an iteration (older files, ``tools/test.py``) are kept.
    """
    path = os.path.join(output_dir, FILE_NAME)
    lines = read_lines(path)
    kept = [line for line in lines
            if not isinstance(line.get("iteration"), int) or line["iteration"] <= iteration]
    if len(kept) != len(lines):
        _write_lines(path, kept, output_dir)
    return len(lines) - len(kept)
