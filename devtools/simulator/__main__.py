"""``python -m devtools.simulator``: serve the simulator with uvicorn until interrupted."""

from __future__ import annotations

import argparse
import socket

import uvicorn

from devtools.simulator.app import create_app
from devtools.simulator.state import DEFAULT_ACCESS_TOKEN_TTL, SimulatorState


class _AnnouncingServer(uvicorn.Server):
    """Prints the ready line once the socket is bound, so callers can wait for it.

    With ``--port 0`` the line carries the port the OS picked.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit or not self.servers:
            return
        port = self.servers[0].sockets[0].getsockname()[1]
        print(f"qontak simulator listening on http://{self.config.host}:{port}", flush=True)


def _account(value: str) -> tuple[str, str]:
    name, separator, refresh_token = value.partition("=")
    if not name or not separator or not refresh_token:
        raise argparse.ArgumentTypeError("expected NAME=REFRESH_TOKEN")
    return name, refresh_token


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.simulator", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--access-token-ttl",
        type=float,
        default=DEFAULT_ACCESS_TOKEN_TTL,
        metavar="SECONDS",
    )
    parser.add_argument(
        "--account",
        type=_account,
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME=REFRESH_TOKEN",
        help="seed a tenant (repeatable)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    state = SimulatorState(access_token_ttl=args.access_token_ttl)
    for name, refresh_token in args.account:
        state.add_account(name, refresh_token)
    config = uvicorn.Config(
        create_app(state), host=args.host, port=args.port, log_level=args.log_level
    )
    _AnnouncingServer(config).run()


if __name__ == "__main__":
    main()
