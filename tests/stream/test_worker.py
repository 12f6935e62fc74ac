"""The worker class: Faust's, with the root logger back at its level after start-up."""

from __future__ import annotations

import logging

from faust.utils.terminal.spinners import Spinner, SpinnerHandler

from gswarm.stream.worker import Worker, restore_root_level


def test_the_app_names_gswarms_worker() -> None:
    from gswarm.stream.app import app

    assert app.conf.Worker is Worker  # type: ignore[comparison-overlap]


def test_restore_drops_the_spinner_handler_and_the_debug_level() -> None:
    root = logging.Logger("root-under-test")
    keep = logging.StreamHandler()
    root.addHandler(keep)
    root.addHandler(SpinnerHandler(Spinner(), level=logging.DEBUG))
    root.setLevel(logging.DEBUG)  # what Faust's worker leaves after start-up
    restore_root_level(logging.WARNING, root)
    assert root.handlers == [keep] and root.level == logging.WARNING
    assert not root.isEnabledFor(logging.DEBUG)
