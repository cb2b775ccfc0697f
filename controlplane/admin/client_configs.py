"""What an operator pastes into each assistant after issuing a key: one row per client, built
from this server's public /mcp URL and the key, shown once on the key's page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SERVER_NAME = "qontak"


@dataclass(frozen=True)
class ClientConfig:
    client: str
    where: str  # where the text goes, in the client's own words
    text: str


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2)


def client_configs(*, mcp_url: str, key: str) -> list[ClientConfig]:
    """Ready-to-paste configuration for the clients that take an API key."""
    bearer = f"Bearer {key}"
    return [
        ClientConfig(
            client="Cursor",
            where="~/.cursor/mcp.json (or .cursor/mcp.json in a project)",
            text=_json(
                {
                    "mcpServers": {
                        SERVER_NAME: {"url": mcp_url, "headers": {"Authorization": bearer}}
                    }
                }
            ),
        ),
        ClientConfig(
            client="VS Code",
            where=".vscode/mcp.json in the workspace (or “MCP: Open User Configuration”)",
            text=_json(
                {
                    "servers": {
                        SERVER_NAME: {
                            "type": "http",
                            "url": mcp_url,
                            "headers": {"Authorization": bearer},
                        }
                    }
                }
            ),
        ),
        ClientConfig(
            client="Claude Desktop",
            where="claude_desktop_config.json (Settings, Developer, Edit Config); needs Node.js "
            "for the mcp-remote bridge",
            text=_json(
                {
                    "mcpServers": {
                        SERVER_NAME: {
                            "command": "npx",
                            "args": [
                                "mcp-remote",
                                mcp_url,
                                "--header",
                                "Authorization:${QONTAK_KEY}",
                            ],
                            "env": {"QONTAK_KEY": bearer},
                        }
                    }
                }
            ),
        ),
    ]
