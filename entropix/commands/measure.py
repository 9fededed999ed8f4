"""Measure token entropy of a seeded random LM head by the fused and the naive path and compare.

Builds hidden states h [N, D] and an unembedding W [D, V] from a seed, computes per-token
log p(target) and entropy of softmax(h W / T) both ways, checks that they agree, and reports the
entropy statistics together with XLA's temporary-memory figure for each compiled path.
"""

import argparse
import json

from entropix.bench.head import measure_head


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``.

    They are the head sizes (``--tokens``, ``--dim``, ``--vocab``, ``--chunk``), ``--temperature``,
    ``--scale``, ``--seed`` and ``--json``.

    Args:
        parser: the sub-command's parser (``entropix.cli.main`` builds it).
    """
    parser.add_argument("--tokens", type=int, default=1024, help="N, number of token positions")
    parser.add_argument("--dim", type=int, default=256, help="D, hidden size")
    parser.add_argument("--vocab", type=int, default=32768, help="V, vocabulary size")
    parser.add_argument("--chunk", type=int, default=1024, help="vocabulary columns per block")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--scale", type=float, default=3.0, help="logit scale (peakedness)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def run(args: argparse.Namespace) -> int:
    """Measure the seeded head both ways and print the report (a table, or one JSON object).

    Args:
        args: the parsed ``entropix measure`` arguments (``tokens``, ``dim``, ``vocab``,
            ``chunk``, ``temperature``, ``scale``, ``seed``, ``json``).

    Returns:
        The exit code: 0 when the fused and naive paths agree, 1 otherwise.
    """
    report = measure_head(
        tokens=args.tokens,
        dim=args.dim,
        vocab=args.vocab,
        chunk=args.chunk,
        temperature=args.temperature,
        scale=args.scale,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(report))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0 if report["paths_agree"] else 1
