"""WSGI entry point: ``gunicorn -c python:ecommerce.gunicorn_conf ecommerce.wsgi:app``.

Inside the package, so an installed wheel serves from any directory, with no
source tree (``flask --app ecommerce.wsgi db upgrade`` likewise). The top-level
``wsgi.py`` of the source tree re-exports it. Importing it loads nothing of the
flash-sale simulator or the fault drill (setup.cfg's layering contract), and
creating the app does not connect to the database: the engine is built on first
use, inside the gunicorn worker, after the fork.
"""

from ecommerce import create_app

app = create_app()
