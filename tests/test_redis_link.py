"""The pipelined Redis link the rate limits are counted on: replies in order, and failures
that say what happened instead of hanging a tool call."""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from controlplane import policies, ratelimit
from controlplane.redis.link import RedisLink
from tests.servers import PrivateRedis


async def test_concurrent_commands_each_get_their_own_reply(private_redis):
    link = RedisLink(private_redis.url, timeout=2)
    replies = await asyncio.gather(*(link.execute("INCRBY", "n", step) for step in range(1, 51)))
    # Replies come back in the order the commands were sent: running totals 1, 3, 6, ...
    assert replies == [step * (step + 1) // 2 for step in range(1, 51)]
    link.close()


async def test_the_link_authenticates_and_uses_the_database_of_its_url(tmp_path):
    secured = PrivateRedis(tmp_path, password="s3cret", db=3)
    secured.start()
    try:
        link = RedisLink(secured.url, timeout=2)
        await link.execute("SET", "where", "db3")
        assert redis.Redis(port=secured.port, password="s3cret", db=3).get("where") == b"db3"
        link.close()

        wrong = RedisLink(secured.url.replace("s3cret", "wrong"), timeout=2)
        with pytest.raises(RedisConnectionError, match="Redis refused the connection"):
            await wrong.execute("PING")
    finally:
        secured.stop()


async def test_a_lost_connection_fails_fast_and_the_next_command_reconnects(private_redis):
    link = RedisLink(private_redis.url, timeout=2)
    assert await link.execute("PING") == b"PONG"
    private_redis.stop()
    with pytest.raises(RedisConnectionError):
        await link.execute("PING")
    private_redis.start()
    assert await link.execute("PING") == b"PONG"
    link.close()


async def test_a_stalled_redis_times_out_instead_of_hanging_the_call(private_redis):
    link = RedisLink(private_redis.url, timeout=0.3)
    await link.execute("PING")
    assert private_redis.process is not None
    private_redis.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(RedisTimeoutError, match=r"did not answer within 0\.3 s"):
            await link.execute("PING")
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
    assert await link.execute("PING") == b"PONG"
    link.close()


async def test_rate_limits_still_count_after_redis_forgets_its_scripts(private_redis, settings):
    """A restarted Redis has no cached scripts: the count is sent again with its source."""
    settings.REDIS_URL = private_redis.url
    policy = policies.TenantPolicy(
        tool_rules=(),
        rate_rules=(policies.RateRule(rate="2/d", tool="", per_key=False),),
        qontak_ceiling="100/d",
    )

    async def admit() -> ratelimit.RateLimitHit | None:
        return await ratelimit.admit_call(
            policy=policy, tenant_slug="scripts", caller_subject="key:qmcp_test", tool="get_contact"
        )

    assert await admit() is None
    redis.Redis.from_url(private_redis.url).script_flush()
    assert await admit() is None
    hit = await admit()
    assert hit is not None
    assert hit.rule.rate == "2/d"
