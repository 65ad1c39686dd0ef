"""Progress of a long loop: a tqdm bar on a terminal, a few plain lines in a redirected log.

A tqdm bar redraws itself with carriage returns many times a second; in a file (``nohup``,
a batch job's log, ``tee``) that is one endless line. When the stream is not a terminal,
:func:`progress` writes one line per tenth of the work instead (or one per ``interval``
seconds when the length is unknown) and a last line with the count and the time.
"""
import sys
import time
from typing import Iterable, Iterator, Optional, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, total: Optional[int] = None,
             enabled: bool = True, stream: Optional[TextIO] = None,
             interval: float = 60.0) -> Iterable[T]:
    """Wraps ``iterable`` to report how far a loop got.

    Args:
        iterable: what the loop runs over.
        desc: what is counted, e.g. ``"inference"`` (starts each line).
        total: the number of items; default ``len(iterable)`` when it has one.
        enabled: False returns ``iterable`` itself (e.g. on ranks other than 0).
        stream: where to report (default ``sys.stderr``, looked up at call time).
        interval: without a total, the seconds between two plain lines.

    Returns:
        An iterable yielding the same items.
    """
    if not enabled:
        return iterable
    stream = sys.stderr if stream is None else stream
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(iterable, desc=desc, total=total, file=stream, dynamic_ncols=True)
    return _plain_lines(iterable, desc, total, stream, interval)


def _plain_lines(iterable: Iterable[T], desc: str, total: Optional[int], stream: TextIO,
                 interval: float) -> Iterator[T]:
    t0 = last = time.perf_counter()
    next_tenth, n = 1, 0
    for item in iterable:
        yield item
        n += 1
        now = time.perf_counter()
        if total:
            # a line each time another tenth is done (several tenths at once: one line)
            if n * 10 >= next_tenth * total and n < total:
                _line(stream, f"{desc}: {n}/{total} ({100 * n // total}%), {now - t0:.0f} s")
                next_tenth = n * 10 // total + 1
        elif now - last >= interval:
            _line(stream, f"{desc}: {n} done, {now - t0:.0f} s")
            last = now
    _line(stream, f"{desc}: {n}{f'/{total}' if total else ''} done in "
                  f"{time.perf_counter() - t0:.1f} s")


def _line(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()
