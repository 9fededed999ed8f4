"""Progress of long stages (SFT, RL steps, sweeps, benchmarks): a bar with rate and ETA on a
terminal (tqdm), plain lines when the output is not a terminal (logs, CI, pipes).

``Progress(total, "rl")`` then ``progress.update(done, "loss 0.73 | reward 0.50")`` after
each unit of work; on a terminal the bar is redrawn in place, otherwise a line
``rl 12/100 | loss 0.73 | reward 0.50 | 3.20 it/s | eta 27s`` is written every ``every``
units and at the end. ``tracked(items, "sweep")`` wraps a loop over a sequence the same way.
Only process 0 writes.
"""

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO, TypeVar

import jax

Item = TypeVar("Item")


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m`` (ETA and elapsed times in plain lines).

    Args:
        seconds: a duration (negative counts as 0).

    Returns:
        The duration rounded to seconds below a minute, else to seconds or minutes.
    """
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Progress of ``total`` units of work named ``desc``, from ``initial`` (a resumed run).

    The rate counts units done since this object was made, so a resumed run's ETA is not
    skewed by the restored steps.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        initial: int = 0,
        every: int = 1,
        unit: str = "it",
        stream: TextIO | None = None,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.every = max(1, every)
        self.stream = sys.stdout if stream is None else stream
        self.enabled = jax.process_index() == 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start, self.initial, self.done = time.time(), initial, initial
        self._bar = None
        if self.enabled and self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, desc=desc, unit=unit, file=self.stream,
                dynamic_ncols=True, leave=True,
            )  # fmt: skip

    @property
    def rate(self) -> float:
        """Units per second since this object was made."""
        return (self.done - self.initial) / max(time.time() - self.start, 1e-9)

    def line(self, postfix: str = "") -> str:
        """The plain progress line: ``desc done/total | postfix | rate | eta``.

        Args:
            postfix: text after the count (e.g. :func:`~entropix.train.metrics_postfix`);
                default none.

        Returns:
            The line (``took <time>`` instead of the ETA once done).
        """
        parts = [f"{self.desc} {self.done}" + (f"/{self.total}" if self.total else "")]
        if postfix:
            parts.append(postfix)
        rate = self.rate
        parts.append(f"{rate:.2f} {self.unit}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"eta {format_seconds((self.total - self.done) / rate)}")
        elif self.done > self.initial:
            parts.append(f"took {format_seconds(time.time() - self.start)}")
        return " | ".join(parts)

    def update(self, done: int, postfix: str = "") -> None:
        """Record that ``done`` units are complete (absolute count, not an increment).

        Args:
            done: units complete so far.
            postfix: text shown after the count; default none.
        """
        previous, self.done = self.done, done
        if not self.enabled:
            return
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(done - previous)
        elif done > self.initial and (done % self.every == 0 or done == self.total):
            self.stream.write(self.line(postfix) + "\n")
            self.stream.flush()

    def write(self, text: str) -> None:
        """Print a line without breaking the bar.

        Args:
            text: the line.
        """
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        """Close the bar (plain lines need no closing)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def tracked(
    items: Sequence[Item],
    desc: str,
    *,
    stream: TextIO | None = None,
    label: Callable[[Item], str] = str,
) -> Iterator[Item]:
    """Iterate over ``items`` with a :class:`Progress` (one unit per item; the postfix names the
    item being started, ``label(item)``).

    Args:
        items: the sequence to iterate over.
        desc: the stage's name on the bar or line.
        stream: where progress goes; default stdout.
        label: the postfix for an item; default ``str``.

    Yields:
        Each item of ``items`` in order.
    """
    progress = Progress(len(items), desc, stream=stream)
    try:
        for i, item in enumerate(items):
            if progress.tty:
                progress.update(i, label(item))
            yield item
            progress.update(i + 1, label(item))
    finally:
        progress.close()
