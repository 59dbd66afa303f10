"""The simulated exchange's request meter: every order placed or cancelled is one request.

Requests per rolling minute (1 s buckets) and the peak of that figure, kept per minute for a
week (bounded: 10,080 minutes), so `maintenance weekly` can compare the week's peak with the
exchange's declared limit.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 60
KEEP_MINUTES = 7 * 24 * 60


class RequestMeter:
    """Counts requests; `per_minute()` is the last 60 s, `peak()` the week's highest."""

    def __init__(self) -> None:
        self.total = 0
        self._seconds: deque[list[int]] = deque()  # [second, count], the last WINDOW_S
        self._in_window = 0
        self._minutes: deque[list[int]] = deque()  # [minute, highest rolling count]

    def _expire(self, second: int) -> None:
        while self._seconds and self._seconds[0][0] <= second - WINDOW_S:
            self._in_window -= self._seconds.popleft()[1]

    def hit(self, now: float, n: int = 1) -> None:
        """`n` requests at monotonic time `now`."""
        second = int(now)
        self._expire(second)
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += n
        else:
            self._seconds.append([second, n])
        self._in_window += n
        self.total += n
        minute = second // 60
        if self._minutes and self._minutes[-1][0] == minute:
            self._minutes[-1][1] = max(self._minutes[-1][1], self._in_window)
        else:
            self._minutes.append([minute, self._in_window])
            while self._minutes and self._minutes[0][0] <= minute - KEEP_MINUTES:
                self._minutes.popleft()

    def per_minute(self, now: float) -> int:
        """Requests in the last 60 s."""
        self._expire(int(now))
        return self._in_window

    def peak(self) -> int:
        """The highest requests-per-rolling-minute of the kept week."""
        return max((count for _, count in self._minutes), default=0)
