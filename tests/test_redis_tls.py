"""Redis over TLS with a password (`rediss://`, a private CA): every client the control plane
makes (the cache, the channel layer, locks, the tool-call link and the subscription) verifies
the server with the CA that REDIS_CA_FILE names, and refuses a server it cannot verify."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from channels_redis.core import RedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError

from controlplane.redis.clients import SharedRedisCache
from controlplane.redis.link import RedisLink
from controlplane.redis.subscription import Subscription
from devtools import tls_redis

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tls_redis.TlsRedis]:
    with tls_redis.running(tmp_path_factory.mktemp("tls-redis")) as running:
        yield running


def _settings_redis_url(**env: str) -> str:
    """settings.REDIS_URL as a fresh process computes it from `env`."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'controlplane.settings';"
            " django.setup(); from django.conf import settings; print(settings.REDIS_URL)",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def test_redis_ca_file_reaches_every_client_through_the_url(server):
    url = _settings_redis_url(REDIS_URL=server.url, REDIS_CA_FILE=str(server.ca_file))
    assert url.startswith(server.url + "?ssl_ca_certs=")
    # A plain redis:// URL (a test's private Redis, say) is left as it is.
    plain = "redis://127.0.0.1:6379/0"
    assert _settings_redis_url(REDIS_URL=plain, REDIS_CA_FILE=str(server.ca_file)) == plain


def _verified_url(server: tls_redis.TlsRedis) -> str:
    return f"{server.url}?ssl_ca_certs={server.ca_file}"


class _Heard:
    def __init__(self) -> None:
        self.live = asyncio.Event()
        self.message = asyncio.Event()

    def on_live(self) -> None:
        self.live.set()

    def on_message(self) -> None:
        self.message.set()

    def on_lost(self, reason: str) -> None:
        pass


async def test_the_tool_call_link_and_the_subscription_speak_tls_with_the_password(server):
    url = _verified_url(server)
    link = RedisLink(url, timeout=2)
    assert await link.execute("SET", "tls-check", "yes") == b"OK"
    heard = _Heard()
    subscription = Subscription(url, "tls-changes", heard, heartbeat=1)
    task = asyncio.create_task(subscription.run())
    try:
        await asyncio.wait_for(heard.live.wait(), timeout=5)
        await link.execute("PUBLISH", "tls-changes", "")
        await asyncio.wait_for(heard.message.wait(), timeout=5)
    finally:
        task.cancel()
        link.close()


async def test_the_cache_and_the_channel_layer_speak_tls_with_the_password(server):
    url = _verified_url(server)
    cache = SharedRedisCache(url, {"KEY_PREFIX": "tls"})
    await cache.aset("flag", "on", 30)
    assert await cache.aget("flag") == "on"
    layer = RedisChannelLayer(hosts=[url], prefix="tls")
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "tool_call.event", "tool": "get_contact"})
    assert (await layer.receive(channel))["tool"] == "get_contact"
    await layer.flush()


async def test_a_server_the_ca_does_not_vouch_for_is_refused(server):
    link = RedisLink(server.url, timeout=2)  # no CA: the system store does not know ours
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await link.execute("PING")
    link.close()
