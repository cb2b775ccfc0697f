"""`make faults`: the control plane under broken dependencies, measured over real HTTP.

`python -m devtools.faults` starts private copies of everything the control plane depends on
(Redis, a PostgreSQL cluster, OpenBao, the Qontak simulator) on free loopback ports, kills,
stops or pauses them one scenario at a time while eight callers make tool calls, and prints
what a client saw: calls, errors, HTTP 5xx, audit rows lost and the time to recover.
"""
