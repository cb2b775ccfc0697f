"""Debian packages the test suite and CI start as real servers (HAProxy, PgBouncer), installed
with apt-get when missing, as the browser tests install Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess

# Daemons live in /usr/sbin, which a non-root PATH often lacks.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def ensure_command(command: str, package: str) -> str:
    """The path of `command`, after `apt-get install package` if it is missing (as root only).
    Raises RuntimeError when it cannot be had. Debian's policy-rc.d in containers keeps the
    package's own service from starting; the callers run private instances."""
    found = shutil.which(command, path=_SEARCH_PATH)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"{command} is missing: run `apt-get install {package}` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", package]):
        done = subprocess.run(  # noqa: S603 - a fixed apt-get command
            argv, env=env, capture_output=True, text=True, timeout=900
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    found = shutil.which(command, path=_SEARCH_PATH)
    if not found:
        raise RuntimeError(f"apt-get installed {package} but {command} is still missing")
    return found
