"""A stateful Qontak CRM simulator (ASGI), driven by Qontak's own Postman collection.

Run it with ``python -m mcpserver.simulator --port N`` or mount ``create_app()`` in tests.
"""

from mcpserver.simulator.app import create_app
from mcpserver.simulator.state import Account, RecordedRequest, SimulatorState

__all__ = ["Account", "RecordedRequest", "SimulatorState", "create_app"]
