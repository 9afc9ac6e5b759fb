"""The multi-node synchroniser (timeslice, step and event modes) — built by the multi-node issue.

Nothing lives here yet: single-node sessions need no synchronisation, and `session create` refuses
multi-node boards with a NOT_SUPPORTED error until this package drives them.
"""
