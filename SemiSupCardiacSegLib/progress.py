"""Progress bars: tqdm where it is installed, else a plain printout (stock Slicer has no tqdm).

``progress_bar(...)`` takes the tqdm arguments used in this library (an iterable or ``total``,
``initial``, ``desc``, ``disable``, ``leave``, ...) and returns an object with tqdm's ``update``,
``n``, ``refresh``, ``set_postfix``, ``write``, ``close``, iteration and ``with`` support.
"""

from __future__ import annotations

import sys
import time

from .dependencies import is_available


class PlainProgress:
    """A tqdm stand-in: one line ``desc: 40% (4/10)`` on stderr per tenth done, at most every 2 s."""

    def __init__(self, iterable=None, total=None, initial: int = 0, desc: str = "", disable: bool = False, **_ignored):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.desc, self.disable = total, int(initial), desc, disable
        self.postfix = ""
        self._shown_tenth, self._shown_at = -1, 0.0

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, k: int = 1) -> None:
        self.n += k
        self.refresh()

    def refresh(self) -> None:
        if self.disable or not self.total:
            return
        tenth = int(10 * min(self.n, self.total) / self.total)
        now = time.monotonic()
        if tenth > self._shown_tenth and (now - self._shown_at >= 2.0 or tenth == 10):
            self._shown_tenth, self._shown_at = tenth, now
            post = f" {self.postfix}" if self.postfix else ""
            print(
                f"{self.desc}: {100 * self.n / self.total:.0f}% ({self.n}/{self.total}){post}",
                file=sys.stderr,
                flush=True,
            )

    def set_postfix(self, **kw) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    @staticmethod
    def write(text: str, file=None) -> None:
        print(text, file=file, flush=True)

    def close(self) -> None:
        pass


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` when tqdm is installed, else ``PlainProgress(iterable, **kwargs)``."""
    if is_available("tqdm"):
        try:
            from tqdm import tqdm  # noqa: PLC0415
        except ImportError:
            pass
        else:
            return tqdm(iterable, **kwargs)
    return PlainProgress(iterable, **kwargs)
