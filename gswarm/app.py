"""``faust -A gswarm.app worker -l info``: the app with every table, agent and view."""

from __future__ import annotations

from gswarm.stream import agents, peers, tables  # noqa: F401  (register with the app)
from gswarm.stream.app import app
from gswarm.web import views  # noqa: F401

__all__ = ["app"]
