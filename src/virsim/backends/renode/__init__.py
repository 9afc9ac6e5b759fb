"""The Renode backend's parts that need no Renode binary: the platform description generated from
a BoardConfig (platform.py) and the monitor protocol (monitor.py). The adapter that drives a Renode
process with them is not registered yet (backends.PLANNED says why): it is built and tested
against a real Renode build (issue 16)."""
