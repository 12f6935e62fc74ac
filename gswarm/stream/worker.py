"""Gswarm's Faust worker: Faust's, with the root logger back at its level once started.

Faust's worker shows a terminal spinner while it starts, advanced by every log call of
any level: to see them all it sets the root logger to DEBUG and keeps it there, so every
``logger.debug`` in Faust and aiokafka (one per message produced, among others) built a
log record that the handlers then dropped: 7% of a worker's time with many markets. This
worker (named by the App setting ``Worker``) removes the spinner's handler and restores
the configured level when start-up is finished. Faust's contract is unchanged: handlers,
levels and messages are those of ``faust worker -l LEVEL``.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.utils.terminal.spinners import SpinnerHandler


class Worker(faust.Worker):
    """Faust's worker; no DEBUG-level root logger after start-up."""

    _root_level: int = 0

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(app, *args, **kwargs)
        # `faust worker --web-port` sets the canonical URL (what other workers route to) to
        # http://; a worker serving HTTPS is reached at https://
        if app.conf.web_ssl_context is not None:
            app.conf.canonical_url = app.conf.canonical_url.with_scheme("https")

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self._root_level = level
        super().on_setup_root_logger(logger, level)

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        restore_root_level(self._root_level)


def restore_root_level(level: int, root: Any = None) -> None:
    """Drop the spinner's handler and set the root logger back to ``level`` (if set)."""
    root = root or logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, SpinnerHandler)]:
        root.removeHandler(handler)
    if level:
        root.setLevel(level)
