"""The shop's ground floor: PostgreSQL and how the shop reaches it.

* ``engine``: the one engine per process, its pool and sessions (:class:`Database`),
  and the declarative base the models build on;
* ``failover``: how a connection reaches the primary (multi-host URLs, the
  writable check) and a commit a failover could lose;
* ``cooperative``: every wait for the server bounded, and cooperative in gevent;
* ``sqlstates``: the SQLSTATEs the shop acts on;
* ``migrations``: Alembic for a URL (``flask db``, the tests, the simulator);
* ``embedded``: the PostgreSQL under ``instance/`` used when DATABASE_URL is unset.

Nothing here knows of the shop's rules: the models, repositories and services
build on it (setup.cfg, the layering contract).
"""
