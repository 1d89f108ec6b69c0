"""The HTTP API (FastAPI): ``create_app(settings=None, runtime=None)``."""

from callqueue.api.app import create_app

__all__ = ["create_app"]
