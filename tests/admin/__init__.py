"""The operator's admin pages: every model reachable, writes through the services."""
