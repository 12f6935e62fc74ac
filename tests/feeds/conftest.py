"""The end-to-end fixtures of tests/stream (a worker factory, an app with its topics)."""

from tests.stream.conftest import app_settings, workers

__all__ = ["app_settings", "workers"]
