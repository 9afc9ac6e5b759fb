"""virsim for CI: `virsim run` (expectations, scenarios, timeouts), JUnit reports and a pytest plugin.

Everything here is a client of the daemon through virsim.client, like the CLI.
"""
