"""WSGI entry point: ``gunicorn -c python:ecommerce.gunicorn_conf wsgi:app``.

Also found by the ``flask`` command when run from this folder. Creating the app
does not connect to the database: the engine is built on first use, inside the
gunicorn worker, after the fork.
"""

from ecommerce import create_app

app = create_app()
