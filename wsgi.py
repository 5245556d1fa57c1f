"""The source tree's WSGI entry point, ``wsgi:app``: the package's own,
:mod:`ecommerce.wsgi`, re-exported (found by the ``flask`` command when run from
this folder). A deploy names ``ecommerce.wsgi:app``, which needs no source tree.
"""

from ecommerce.wsgi import app

__all__ = ["app"]
