"""Development tools, never imported by the runtime and not in the wheel: the Qontak
simulator and the local processes behind `make run`, the tests and the bench."""
