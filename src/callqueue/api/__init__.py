"""The HTTP API (FastAPI): ``callqueue.api.app.create_app(settings=None, runtime=None)``.

Importing the package imports nothing else: a module that needs one part of the API (its
limits, its error shape) does not pull in the app and everything the app wires."""
