"""Client ID Metadata Documents served the way claude.ai and ChatGPT serve theirs: over https,
here on this machine with a certificate made for the run, which the control plane under test
trusts through SSL_CERT_FILE (with OAUTH_CIMD_ALLOW_LOOPBACK, see controlplane.oauth.clients).

Test modules import the fixtures from here: `document_host` serves the documents and
`cimd_control_plane` is a control plane that fetches them (two workers sharing Redis when
REDIS_URL is set, so its tests also show changes reaching every worker).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.oauth_support import REDIRECT_URI
from tests.servers import ControlPlaneServer, dedicated_control_plane


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key (openssl, valid one day)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class DocumentHost:
    """An https server of client metadata documents; `fetched` lists the paths asked for."""

    origin: str
    certificate: Path
    documents: dict[str, bytes] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    def publish(self, *, client_name: str, redirect_uri: str = REDIRECT_URI) -> str:
        """Serve a new public client's document; returns its URL, which is its client_id."""
        path = f"/clients/{uuid.uuid4().hex[:12]}.json"
        client_id = self.origin + path
        self.documents[path] = json.dumps(
            {
                "client_id": client_id,
                "client_name": client_name,
                "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            }
        ).encode()
        return client_id


def _handler(host: DocumentHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host.fetched.append(self.path)
            body = host.documents.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def document_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocumentHost]:
    directory = tmp_path_factory.mktemp("client-documents")
    cert, key = self_signed_certificate(directory)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    host = DocumentHost(origin=f"https://localhost:{server.server_address[1]}", certificate=cert)
    server.RequestHandlerClass = _handler(host)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield host
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def cimd_control_plane(
    request: pytest.FixtureRequest, document_host: DocumentHost
) -> Iterator[ControlPlaneServer]:
    with dedicated_control_plane(
        request,
        workers=2 if settings.REDIS_URL else 1,
        OAUTH_CIMD_ALLOW_LOOPBACK="true",
        SSL_CERT_FILE=str(document_host.certificate),
    ) as server:
        yield server
