"""``uvicorn callqueue.api.asgi:app``: the API alone, configured from the environment.

The same as ``callqueue api``, for those who want uvicorn's own options (``--reload``,
``--workers``, TLS, ...). The app opens its runtime on start-up and closes it on shutdown.
"""

from callqueue.api.app import create_app

app = create_app()
