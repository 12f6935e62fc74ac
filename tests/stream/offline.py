"""A Faust app for unit tests of Gswarm's Faust parts: nothing is started, no broker."""

from __future__ import annotations

from typing import Any

import faust


def offline_app(name: str, **conf: Any) -> faust.App:
    """An app on Gswarm's transport (``gswarm://``, never connected) with an in-memory
    store, its flow resumed as after a worker's first recovery."""
    app = faust.App(name, broker="gswarm://127.0.0.1:1", store="memory://", **conf)
    app.flow_control.resume()  # suspended until a worker's first recovery ends
    return app
