"""The 12.12 simulator: a flash sale against the real service, over real HTTP.

`flask flashsale` answers two questions before sale night: can it oversell, and
how many checkouts per second does one hot item take, next to the database's
own ceiling for the same pay transaction (measured with pgbench).
"""
