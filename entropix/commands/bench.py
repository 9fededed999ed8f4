"""Benchmark speed, memory and scaling as ratios measured side by side; write JSON + Markdown.

Suites: entropy (fused vs naive log-prob/entropy: time and XLA temporary memory), loss (every
registered loss vs token-mean PPO clip), train and rollout (decoder train step and decoding),
scaling (vmapped seeds vs a Python loop) and rl (one RL update of the engine: rollout, update
and probe shares of a step, and model-FLOP utilisation). Each timed figure is the
median of >= 5 runs after compilation, reported with min and max. Writes OUT/results.json and
OUT/results.md and prints the Markdown. See docs/benchmarks.md.
"""

import argparse

from entropix.bench import report
from entropix.bench.suites import SUITES, run_suites
from entropix.bench.timing import MIN_REPEATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``.

    They are ``--suite`` (a suite name or all), ``--out`` (output directory), ``--quick`` (tiny
    sizes) and ``--repeats`` (timed runs per figure).

    Args:
        parser: the sub-command's parser (``entropix.cli.main`` builds it).
    """
    parser.add_argument(
        "--suite", choices=(*SUITES, "all"), default="all", help="which suite to run (all)"
    )
    parser.add_argument("--out", default="bench_results", help="output directory")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds, for tests)")
    parser.add_argument(
        "--repeats", type=int, default=MIN_REPEATS, help=f"timed runs per figure (>= {MIN_REPEATS})"
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen suites, write ``OUT/results.json`` and ``OUT/results.md`` and print the
    Markdown.

    Args:
        args: the parsed ``entropix bench`` arguments (``suite``, ``out``, ``quick``,
            ``repeats``).

    Returns:
        The exit code: 0.

    Raises:
        ValueError: ``--repeats`` is below ``MIN_REPEATS``.
    """
    if args.repeats < MIN_REPEATS:
        raise ValueError(f"--repeats must be >= {MIN_REPEATS} (got {args.repeats})")
    names = list(SUITES) if args.suite == "all" else [args.suite]
    suites = run_suites(names, args.quick, args.repeats)
    results = report.write(args.out, suites, args.quick)
    print(report.markdown(results))
    print(f"wrote {args.out}/results.json and {args.out}/results.md")
    return 0
