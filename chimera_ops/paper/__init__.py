"""Reference paper-trading engine: the managed component of the chimera-ops demo stack.

Run it with ``python -m chimera_ops.paper``. It simulates a price feed and a small market-making
strategy, persists orders and fills to PostgreSQL, caches prices and positions in Redis, and
implements the trading control contract (``/control/state``, ``/control/halt``,
``/control/resume``) plus opt-in fault injection (``--faults``).
"""
