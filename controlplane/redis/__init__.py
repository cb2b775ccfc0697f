"""Redis, spoken directly where the tool-call path needs it.

redis-py's asyncio client takes a pooled connection, a lock and a timeout context for every
command, which made the one Redis command of a warm tool call cost several times the CPU of
the call's own work (the README's Performance section has the figures). So the hot path uses
a small hand-written client instead: one pipelined connection per event loop (`link`) and a
subscription that handles each message as its bytes arrive (`subscription`), both on hiredis,
the parser redis-py itself uses, and raising redis-py's exceptions. Everything else (the cache
backend, locks, announcements) stays on redis-py (`clients`).
"""

from controlplane.redis.clients import REDIS_TIMEOUT_SECONDS, redis_link, sync_redis

__all__ = ["REDIS_TIMEOUT_SECONDS", "redis_link", "sync_redis"]
