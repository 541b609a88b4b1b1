"""Rate-limit the Kafka client's reconnect noise: a WARNING every few seconds, with counts.

With a broker away, aiokafka logs an ERROR for every failed connection attempt -- thousands a
minute, 30 MB of log an hour. The operator needs to know the broker is away, once in a
while, with how often it was tried; not every attempt.
"""

from __future__ import annotations

import logging
import time

_WINDOW_S = 10.0


class RepeatFilter(logging.Filter):
    """Lets the first record of each (logger, message template) through per window.

    Applies to the loggers under ``prefix``; records at ERROR from them are shown as WARNING
    (a reconnect loop is a condition to watch, the projector itself retries), and a passing
    record says how many like it were suppressed since the last one shown.
    """

    def __init__(self, prefix: str = "aiokafka", window_s: float = _WINDOW_S) -> None:
        super().__init__()
        self._prefix = prefix
        self._window_s = window_s
        self._last_shown: dict[tuple[str, object], float] = {}
        self._suppressed: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefix) or record.levelno < logging.WARNING:
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last_shown.get(key, -self._window_s) < self._window_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last_shown[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if suppressed:
            record.msg = f"{record.msg} [{suppressed} more like this in the last " \
                         f"{self._window_s:.0f}s]"
        return True


def install(handler_owner: logging.Logger | None = None) -> RepeatFilter:
    """Attach one RepeatFilter to every handler of the root logger (where records land)."""
    owner = handler_owner or logging.getLogger()
    repeat = RepeatFilter()
    for handler in owner.handlers:
        handler.addFilter(repeat)
    return repeat
