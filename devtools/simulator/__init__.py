"""A stateful Qontak CRM simulator (ASGI), driven by Qontak's own Postman collection.

Run it with ``python -m devtools.simulator --port N`` or mount ``create_app()`` in tests.
"""

from devtools.simulator.app import create_app
from devtools.simulator.state import Account, RecordedRequest, SimulatorState

__all__ = ["Account", "RecordedRequest", "SimulatorState", "create_app"]
