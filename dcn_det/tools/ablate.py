"""Run an ablation: every variant x seed trained and evaluated, then aggregated.

    python tools/ablate.py --config BASE --variants VARIANTS.yaml --seeds 0 1 2 \
        --output-dir DIR [--nproc N] [--threads T] [--tests TESTS.yaml] [--report-only]
        [--set K=V ...]

VARIANTS.yaml maps each variant name to a list of KEY=VALUE overrides (as --set takes); the
first variant is the baseline. TESTS.yaml (optional) maps extra test-set names to overrides
applied only when evaluating (e.g. a split of smaller objects); the config's own data.test is
always evaluated as "test". --set overrides the base config for every variant (before the
variant's own overrides, which win). Runs go to DIR/runs/<variant>/seed<S>; finished runs are
skipped and interrupted ones resume. Writes DIR/results.json, DIR/results.md and DIR/results.png.
--nproc runs N runs at once, each with --threads intra-op threads (default cores / N).
"""
import argparse
import os
import sys

from dcn_det.cli import add_set_arg, run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="base YAML config")
    parser.add_argument("--variants", required=True, help="YAML: variant name -> overrides")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--tests", default=None, help="YAML: extra test set -> overrides")
    add_set_arg(parser, help="overrides of the base config for every variant (repeatable)")
    parser.add_argument("--nproc", type=int, default=1, help="runs executed at once")
    parser.add_argument("--threads", type=int, default=None, help="threads per run")
    parser.add_argument("--report-only", action="store_true",
                        help="aggregate what exists; train nothing")
    args = parser.parse_args(argv)

    from dcn_det.ablation import plan_runs, read_overrides_file, run_all, write_report
    from dcn_det.log import setup_logging
    os.makedirs(args.output_dir, exist_ok=True)
    setup_logging(os.path.join(args.output_dir, "ablate_log.txt"))
    variants = {name: [*args.set, *overrides]
                for name, overrides in read_overrides_file(args.variants, "variant").items()}
    tests = read_overrides_file(args.tests, "test set") if args.tests else {}
    runs = plan_runs(args.config, variants, args.seeds, args.output_dir, tests)
    failed = [] if args.report_only else run_all(runs, nproc=args.nproc, threads=args.threads)
    write_report(runs, args.output_dir)
    print(open(os.path.join(args.output_dir, "results.md"), encoding="utf-8").read())
    if failed:
        print(f"error: {len(failed)} run(s) failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
