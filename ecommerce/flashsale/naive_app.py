"""The shop's WSGI app with the naive pay (ecommerce/flashsale/naive.py), for
the simulator's negative control: ``gunicorn ... ecommerce.flashsale.naive_app:app``."""

from ecommerce import create_app
from ecommerce.flashsale import naive

app = create_app(pay_engine=naive.pay)
