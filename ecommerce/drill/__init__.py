"""The sale-night fault drill (`flask drill`, `make drill`): the production
topology on one machine (a PostgreSQL primary with a synchronous standby under
pg_auto_failover, PgBouncer beside each node, three shop instances behind
HAProxy), a hot-item storm of well-behaved clients (in one phase through a
waiting room: join, wait for the turn, buy with the admission), faults
injected while it runs, and the books checked on the final primary. Like the
simulator, a tool beside the shop: the app never imports it."""
