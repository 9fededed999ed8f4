"""Benchmark speed, memory and scaling as ratios measured side by side; write JSON + Markdown.

Suites: entropy (fused vs naive log-prob/entropy: time and XLA temporary memory), loss (every
registered loss vs token-mean PPO clip), train and rollout (decoder train step and decoding),
scaling (vmapped seeds vs a Python loop) and rl (one RL update of the engine: rollout, update
and probe shares of a step, and model-FLOP utilisation). Each timed figure is the
median of >= 5 runs after compilation, reported with min and max. Writes OUT/results.json and
OUT/results.md and prints the Markdown. See docs/benchmarks.md.
"""

from entropix.bench import report
from entropix.bench.suites import SUITES, run_suite
from entropix.bench.timing import MIN_REPEATS


def add_arguments(parser):
    parser.add_argument(
        "--suite", choices=(*SUITES, "all"), default="all", help="which suite to run (all)"
    )
    parser.add_argument("--out", default="bench_results", help="output directory")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds, for tests)")
    parser.add_argument(
        "--repeats", type=int, default=MIN_REPEATS, help=f"timed runs per figure (>= {MIN_REPEATS})"
    )


def run(args) -> int:
    if args.repeats < MIN_REPEATS:
        raise ValueError(f"--repeats must be >= {MIN_REPEATS} (got {args.repeats})")
    names = list(SUITES) if args.suite == "all" else [args.suite]
    suites = {name: run_suite(name, args.quick, args.repeats) for name in names}
    results = report.write(args.out, suites, args.quick)
    print(report.markdown(results))
    print(f"wrote {args.out}/results.json and {args.out}/results.md")
    return 0
