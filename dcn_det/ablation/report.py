"""Aggregates the runs of an ablation: ``results.json``, ``results.md`` and ``results.png``.

Per variant and test set: mean and sample standard deviation (ddof 1) over the seeds of
each metric, and the difference from the first variant (the baseline). A difference is
marked as exceeding the seed-to-seed spread when ``|delta| > std(variant) + std(baseline)``,
i.e. the two mean ± std intervals do not overlap.
"""
import math
import os
from typing import Any, Dict, List, Optional, Sequence

from dcn_det.ablation.run_one import final_metrics, metrics_path
from dcn_det.ablation.spec import RunSpec
from dcn_det.io.atomic import write_json, write_text

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
VOC_METRICS = ("mAP", "mAP_07")


def _read_metrics(spec: RunSpec, test: str) -> Optional[Dict[str, float]]:
    """The scalar box metrics (COCO ``bbox`` or VOC) of the run's final model on ``test``, or
    None while they are missing (:func:`dcn_det.ablation.run_one.final_metrics`)."""
    data = final_metrics(spec, test)
    if data is None:
        return None
    section = data.get("bbox", data.get("voc"))
    if not isinstance(section, dict):
        raise ValueError(f"{metrics_path(spec, test)}: has neither a 'bbox' nor a 'voc' section")
    return {k: float(v) for k, v in section.items() if isinstance(v, (int, float))}


def _stats(values: List[float]) -> Dict[str, Any]:
    """Mean and sample std of the finite values (COCO gives NaN for a size range without
    objects, e.g. APl on a split of small objects); ``n`` counts the finite ones."""
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    mean = sum(finite) / n if n else math.nan
    std = (math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else math.nan)
    return {"mean": mean, "std": std, "n": n, "values": values}


def aggregate(runs: Sequence[RunSpec]) -> Dict[str, Any]:
    """Collects every run's metrics and summarises them per variant and test set.

    Args:
        runs: the ablation's runs, baseline variant first (as planned).

    Returns:
        ``{"config", "seeds", "baseline", "tests", "metrics", "variants": {name:
        {"overrides", "runs": {seed: {test: {metric: value}}}, "missing": [...],
        "summary": {test: {metric: {"mean", "std", "n", "values", "delta", "exceeds_spread"}}}}}}``.
        Seeds whose metrics are missing are listed under ``"missing"``, never silently dropped.
    """
    if not runs:
        raise ValueError("no runs to aggregate")
    variants: Dict[str, Dict[str, Any]] = {}
    tests = list(runs[0].tests)
    for spec in runs:
        v = variants.setdefault(spec.variant, {
            "overrides": [o for o in spec.overrides
                          if not o.startswith(("runtime.seed=", "runtime.output_dir="))],
            "runs": {}, "missing": []})
        for test in tests:
            m = _read_metrics(spec, test)
            if m is None:
                v["missing"].append(f"seed {spec.seed} / {test}")
            else:
                v["runs"].setdefault(str(spec.seed), {})[test] = m
    names = [k for k in COCO_METRICS + VOC_METRICS
             if any(k in per_test for v in variants.values() for r in v["runs"].values()
                    for per_test in r.values())]
    for v in variants.values():
        v["summary"] = {
            test: {k: _stats([r[test][k] for r in v["runs"].values()
                              if test in r and k in r[test]]) for k in names}
            for test in tests}
    baseline = runs[0].variant
    base = variants[baseline]["summary"]
    for v in variants.values():
        for test in tests:
            for k, s in v["summary"][test].items():
                b = base[test][k]
                s["delta"] = s["mean"] - b["mean"]
                spread = s["std"] + b["std"]
                s["exceeds_spread"] = bool(not math.isnan(spread) and abs(s["delta"]) > spread)
    return {"config": runs[0].config, "seeds": sorted({s.seed for s in runs}),
            "baseline": baseline, "tests": tests, "metrics": names, "variants": variants}


def _cell(s: Dict[str, Any], is_baseline: bool) -> str:
    if s["n"] == 0:
        return "—"
    text = f"{s['mean']:.1f}" + (f" ± {s['std']:.1f}" if s["n"] > 1 else "")
    if not is_baseline and not math.isnan(s["delta"]):
        text += f" ({s['delta']:+.1f}{'*' if s['exceeds_spread'] else ''})"
    return text


def format_markdown(result: Dict[str, Any]) -> str:
    """The ``results.md`` text: one table per test set, then each variant's overrides."""
    seeds = ", ".join(str(s) for s in result["seeds"])
    lines = [f"# Ablation of `{os.path.basename(result['config'])}`", "",
             f"Seeds {seeds}. Each cell: mean ± sample std over the seeds, then in brackets the "
             f"difference from the baseline `{result['baseline']}`; `*` marks a difference "
             "larger than std(variant) + std(baseline).", ""]
    metrics = result["metrics"]
    for test in result["tests"]:
        lines += [f"## Test set `{test}`", "",
                  "| variant | " + " | ".join(metrics) + " | seeds |",
                  "|---|" + "---|" * (len(metrics) + 1)]
        for name, v in result["variants"].items():
            s = v["summary"][test]
            n = max((x["n"] for x in s.values()), default=0)
            label = f"{name} (baseline)" if name == result["baseline"] else name
            lines.append(f"| {label} | " + " | ".join(
                _cell(s[k], name == result["baseline"]) for k in metrics) + f" | {n} |")
        lines.append("")
    lines += ["## Variants", ""]
    for name, v in result["variants"].items():
        lines.append(f"- `{name}`: " + (" ".join(f"`{o}`" for o in v["overrides"])
                                         or "the base config"))
        if v["missing"]:
            lines.append(f"  - missing results: {', '.join(v['missing'])}")
    return "\n".join(lines) + "\n"


def write_report(runs: Sequence[RunSpec], output_dir: str) -> Dict[str, Any]:
    """Writes ``results.json``, ``results.md`` and ``results.png`` (one more
    ``results_<test>.png`` per extra test set) to ``output_dir``; returns the aggregate."""
    from dcn_det.plots import grouped_bar_chart

    result = aggregate(runs)
    if not result["metrics"]:
        raise FileNotFoundError(f"no run of this ablation has results yet: no metrics.json under "
                                f"{os.path.join(output_dir, 'runs')}")
    write_json(os.path.join(output_dir, "results.json"), result)
    write_text(os.path.join(output_dir, "results.md"), format_markdown(result))
    names = list(result["variants"])
    for i, test in enumerate(result["tests"]):
        png = "results.png" if i == 0 else f"results_{test}.png"
        summ = [result["variants"][n]["summary"][test] for n in names]
        grouped_bar_chart(
            os.path.join(output_dir, png), groups=result["metrics"], series=names,
            means=[[s[k]["mean"] for k in result["metrics"]] for s in summ],
            stds=[[s[k]["std"] if s[k]["n"] > 1 else math.nan for k in result["metrics"]]
                  for s in summ],
            title=f"{os.path.basename(result['config'])}: test set '{test}', "
                  f"mean +- std over {len(result['seeds'])} seeds",
            ylabel="AP (%)")
    return result
