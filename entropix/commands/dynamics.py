"""Tabulate a run's entropy dynamics: predicted vs measured dH, where dH came from, the law fit.

Reads ``RUN_DIR/metrics.jsonl`` (and each sub-run's, for a sweep; runs that logged no dH are
skipped), prints one Markdown table (a column per run) on stdout and writes it to
``RUN_DIR/dynamics_table.md`` and ``RUN_DIR/dynamics_table.json``. Rows whose metrics the run
did not log are left out. Over the logged steps t with both dH/predicted and dH/measured:

  steps                         number of such steps
  dH/predicted/corr             Pearson r of predicted (<grad H, delta theta>) and measured dH
  dH/predicted/r2_identity      1 - sum_t (meas - pred)^2 / sum_t (meas - mean meas)^2: the
                                prediction read as y = x (1 is exact; can be negative)
  dH/predicted/r2_line          R^2 of the least-squares line meas ~ alpha + beta pred (= r^2)
  dH/predicted/median_rel_error median_t |pred - meas| / |meas|
  dH/residual/worst_step        the step with the largest squared residual (meas - pred)^2
  dH/residual/worst_share       its share of sum_t (meas - pred)^2
  dlogp/max/median, /at_worst   the largest |change of a sampled token's log pi| of a step
                                (dlogp/max): its median over the steps and at the worst step;
                                O(1) nats means the step left the first-order regime
  dH/small_steps/corr, ...      corr and median_rel_error of dH/predicted on the steps whose
                                dlogp/max <= --dlogp-bound (default 1 nat: every sampled token's
                                ratio pi_new / pi_old within [1/e, e]), their number (steps)
                                and the bound: the agreement where the step stayed first order
  dH/logit_law/..., dH/sampled_cov/..., dH/second_order/...
                                corr and median_rel_error of the exact-vocabulary logit law
                                -Cov(log pi, delta z), of the sampled-token batch estimator and
                                (with dynamics.second_order) of the Taylor series to second
                                order along the update: what of the miss is curvature
  dH/pred/<group>/mean          mean per-step part of dH/predicted from a token group
  dH/pred/<group>/share         sum_t |g_t| / sum_t sum_g' |g'_t| over the group's partition:
                                quadrants pos_high, pos_low, neg_high, neg_low (advantage sign
                                x sampled-token probability high/low) and zero (advantage 0);
                                forking (top-20% entropy tokens) and non_forking
  law/a, law/b, law/r2          the fit R = -a exp(H) + b of reward on entropy (steps with both)
  law/ceiling[_lower|_upper]    its ceiling b - a (R at H = 0) and the --z interval
  law/points                    the number of (entropy, reward) pairs fitted
"""

import argparse
import sys

from entropix.runs import DYNAMICS_FILES, dynamics_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``.

    They are the run directory, ``--z`` (ceiling interval half-width) and ``--dlogp-bound``
    (the dH/small_steps rows' bound on dlogp/max).

    Args:
        parser: the sub-command's parser (``entropix.cli.main`` builds it).
    """
    parser.add_argument("run_dir", help="a run directory written by `entropix run`")
    parser.add_argument(
        "--z", type=float, default=1.96, help="ceiling interval half-width in standard errors"
    )
    parser.add_argument(
        "--dlogp-bound",
        type=float,
        default=1.0,
        help="the dH/small_steps rows keep the steps whose dlogp/max is at most this (nats)",
    )


def run(args: argparse.Namespace) -> int:
    """Print the run's dynamics table and write ``dynamics_table.md`` / ``.json`` into it.

    Args:
        args: the parsed ``entropix dynamics`` arguments (``run_dir``, ``z``,
            ``dlogp_bound``).

    Returns:
        The exit code: 0.
    """
    markdown, _ = dynamics_report(args.run_dir, args.z, args.dlogp_bound)
    print(markdown)
    print(f"wrote {', '.join(DYNAMICS_FILES)} in {args.run_dir}", file=sys.stderr)
    return 0
