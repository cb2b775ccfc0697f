"""The faults, one scenario each: what is broken, for how long, and how it is undone.

`inject` breaks a dependency while the callers run and returns the fault's window (monotonic
seconds): recovery time counts from its end. `undo` runs whatever happened (timeout, Ctrl-C),
so the next scenario starts from a working stack. Blocking steps (pg_ctl, waits on the
simulator) run in threads, so the callers keep calling meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from devtools.faults.malformed import send_malformed
from devtools.faults.private_servers import pause, resume
from devtools.faults.stack import WORKERS, FaultStack
from devtools.faults.traffic import Traffic
from devtools.simulator.state import DEFAULT_ACCESS_TOKEN_TTL

# The access token's lifetime while OpenBao is paused: the control plane refreshes 10% ahead
# of expiry (controlplane.tokens), so a token issued at t is due at t+18 s and dead at t+20 s.
SHORT_TOKEN_TTL = 20
# controlplane.tokens.VAULT_QUIET_SECONDS, not imported: the harness does not load Django.
VAULT_QUIET_SECONDS = 5.0
MALFORMED_REQUESTS = 2000
BURST_CEILING = 1_000_000  # failures a Qontak burst may hand out: more than any run asks


@dataclass
class FaultWindow:
    """When the fault began and ended, what the run should say about it, and the 5xx
    answers it drew itself (the malformed requests')."""

    start: float
    end: float
    notes: list[str] = field(default_factory=list)
    server_errors: int = 0


Inject = Callable[[FaultStack, Traffic], Awaitable[FaultWindow]]
Undo = Callable[[FaultStack], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    key: str  # letters and digits only: it starts every request id of the scenario
    title: str
    inject: Inject
    undo: Undo
    inject_timeout: float
    recover_timeout: float = 30.0  # how long to wait for a success after the fault
    # How long audit rows may take to appear, and how long their count may stand still
    # before the missing ones are taken as lost (a replay from the spool may come late).
    settle_timeout: float = 20.0
    settle_quiet: float = 8.0


async def _nothing(stack: FaultStack) -> None:
    return None


def redis_killed(seconds: float) -> Inject:
    async def inject(stack: FaultStack, traffic: Traffic) -> FaultWindow:
        start = time.monotonic()
        stack.redis.kill()
        await asyncio.sleep(seconds)
        await asyncio.to_thread(stack.redis.start)
        return FaultWindow(start, time.monotonic())

    return inject


async def redis_back(stack: FaultStack) -> None:
    if not stack.redis.running():
        await asyncio.to_thread(stack.redis.start)


def redis_paused(seconds: float) -> Inject:
    async def inject(stack: FaultStack, traffic: Traffic) -> FaultWindow:
        start = time.monotonic()
        pause(stack.redis.pid)
        await asyncio.sleep(seconds)
        resume(stack.redis.pid)
        return FaultWindow(start, time.monotonic())

    return inject


async def redis_resumed(stack: FaultStack) -> None:
    resume(stack.redis.pid)


def postgres_stopped(seconds: float) -> Inject:
    async def inject(stack: FaultStack, traffic: Traffic) -> FaultWindow:
        start = time.monotonic()
        await asyncio.to_thread(stack.postgres.stop)
        await asyncio.sleep(seconds - (time.monotonic() - start))
        await asyncio.to_thread(stack.postgres.start)
        return FaultWindow(start, time.monotonic())

    return inject


async def postgres_back(stack: FaultStack) -> None:
    if not await asyncio.to_thread(stack.postgres.running):
        await asyncio.to_thread(stack.postgres.start)


async def openbao_paused_across_expiry(stack: FaultStack, traffic: Traffic) -> FaultWindow:
    """Give the tenant a short-lived access token, then pause OpenBao before it is due and
    resume it after it expired: the refresh (which reads and writes the refresh token in
    Vault) falls due while Vault answers nothing."""
    refreshes = await asyncio.to_thread(stack.simulator_refresh_count)
    await asyncio.to_thread(
        stack.set_simulator_faults, access_token_ttl=SHORT_TOKEN_TTL, expire_access_tokens=True
    )
    while True:  # the next call meets a 401 and refreshes: the short-lived token is issued
        if await asyncio.to_thread(stack.simulator_refresh_count) > refreshes:
            break
        await asyncio.sleep(0.1)
    issued = time.monotonic()
    await asyncio.sleep(5)
    start = time.monotonic()
    pause(stack.openbao_pid)
    await asyncio.sleep(issued + SHORT_TOKEN_TTL + 8 - time.monotonic())
    resume(stack.openbao_pid)
    note = (
        f"access token lifetime {SHORT_TOKEN_TTL} s; OpenBao paused "
        f"{start - issued:.0f} s to {time.monotonic() - issued:.0f} s after the refresh"
    )
    return FaultWindow(start, time.monotonic(), [note])


async def openbao_resumed(stack: FaultStack) -> None:
    resume(stack.openbao_pid)
    # Back to the simulator's lifetime. A worker that found Vault unreachable does not ask it
    # again for controlplane.tokens.VAULT_QUIET_SECONDS (5 s); once that is over, expiring
    # the short-lived token makes the next call refresh (401, refresh, retry) with Vault up.
    await asyncio.sleep(VAULT_QUIET_SECONDS + 1)
    await asyncio.to_thread(
        stack.set_simulator_faults,
        access_token_ttl=DEFAULT_ACCESS_TOKEN_TTL,
        expire_access_tokens=True,
    )


def qontak_fails(seconds: float, **rule: object) -> Inject:
    """Every Qontak API request fails as `rule` says for `seconds` (fail_next with a count
    no run reaches), then the simulator is healthy again. A burst in time, not in requests:
    the control plane's tenant-wide pause sends fewer requests while Qontak fails, so a
    count of failures would last as long as the pauses."""

    async def inject(stack: FaultStack, traffic: Traffic) -> FaultWindow:
        start = time.monotonic()
        await asyncio.to_thread(
            stack.set_simulator_faults, fail_next={"count": BURST_CEILING, **rule}
        )
        await asyncio.sleep(seconds)
        rules = (await asyncio.to_thread(stack.simulator_faults))["fail_next"]
        await asyncio.to_thread(stack.clear_simulator_faults)
        used = BURST_CEILING - sum(int(rule["remaining"]) for rule in rules)
        return FaultWindow(start, time.monotonic(), [f"{used} Qontak requests failed"])

    return inject


def qontak_latency(latency_ms: int, seconds: float) -> Inject:
    """Every Qontak request answers `latency_ms` late for `seconds`; requests already
    waiting keep their delay after it ends."""

    async def inject(stack: FaultStack, traffic: Traffic) -> FaultWindow:
        start = time.monotonic()
        await asyncio.to_thread(stack.set_simulator_faults, latency_ms=latency_ms)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(stack.set_simulator_faults, latency_ms=0)
        return FaultWindow(start, time.monotonic())

    return inject


async def qontak_healthy(stack: FaultStack) -> None:
    await asyncio.to_thread(stack.clear_simulator_faults)


async def worker_killed(stack: FaultStack, traffic: Traffic) -> FaultWindow:
    """SIGKILL one uvicorn worker; the fault lasts until the supervisor has replaced it."""
    workers = stack.control_plane.workers()
    victim = workers[0]
    start = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    while True:
        now = await asyncio.to_thread(stack.control_plane.workers)
        if len(now) >= WORKERS and victim not in now:
            break
        await asyncio.sleep(0.05)
    note = f"worker {victim} killed; replaced by {sorted(set(now) - set(workers))}"
    return FaultWindow(start, time.monotonic(), [note])


async def malformed_flood(stack: FaultStack, traffic: Traffic) -> FaultWindow:
    start = time.monotonic()
    tally = await send_malformed(traffic, MALFORMED_REQUESTS)
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(tally.by_status.items()))
    notes = [f"{tally.sent} malformed requests answered {statuses}"]
    if tally.server_errors:
        worst = "; ".join(f"{kind} x{n}" for kind, n in tally.server_errors.most_common(5))
        notes.append(f"malformed requests with a 5xx or no answer: {worst}")
    server_errors = sum(n for status, n in tally.by_status.items() if status.startswith("5"))
    return FaultWindow(start, time.monotonic(), notes, server_errors)


SCENARIOS = [
    Scenario("rediskill", "Redis killed 10 s", redis_killed(10), redis_back, 40),
    Scenario("redispause", "Redis paused 10 s", redis_paused(10), redis_resumed, 30),
    Scenario(
        "pg15",
        "PostgreSQL stopped 15 s",
        postgres_stopped(15),
        postgres_back,
        60,
        settle_timeout=60,
        settle_quiet=60,
    ),
    Scenario(
        "pg75",
        "PostgreSQL stopped 75 s",
        postgres_stopped(75),
        postgres_back,
        120,
        settle_timeout=60,
        settle_quiet=60,
    ),
    Scenario(
        "baopause",
        "OpenBao paused across a token expiry",
        openbao_paused_across_expiry,
        openbao_resumed,
        60,
    ),
    Scenario(
        "q429",
        "Qontak 429 (Retry-After 2) for 10 s",
        qontak_fails(10, status=429, retry_after=2),
        qontak_healthy,
        30,
    ),
    Scenario("q503", "Qontak 503 for 10 s", qontak_fails(10, status=503), qontak_healthy, 30),
    Scenario("qslow", "Qontak slow (3 s) for 10 s", qontak_latency(3000, 10), qontak_healthy, 30),
    Scenario(
        "qhang",
        "Qontak hangs (40 s) for 10 s",
        qontak_latency(40000, 10),
        qontak_healthy,
        30,
        recover_timeout=45,
    ),
    Scenario(
        "qreset",
        "Qontak resets connections for 10 s",
        qontak_fails(10, reset=True),
        qontak_healthy,
        30,
    ),
    Scenario("worker", "one uvicorn worker killed", worker_killed, _nothing, 60),
    Scenario(
        "malformed",
        f"{MALFORMED_REQUESTS:,} malformed requests",
        malformed_flood,
        _nothing,
        120,
    ),
]
