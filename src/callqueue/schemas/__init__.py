"""What a request may say, what an answer shows, and how a request becomes the engine's
``CallSpec`` (with its campaign's defaults): one set of shapes for the API, the CLI, the CSV
list import and the status-webhook bodies, so none of them reaches into another's modules.

It sits above the engine (the views read its records; the defaults cache reads through it) and
below the services."""
