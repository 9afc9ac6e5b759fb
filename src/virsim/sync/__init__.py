"""The multi-node synchroniser (timeslice, step and event modes): a multi-node board as one
session of the `system` backend (instance.py), its nodes' processes and merged console
(system.py), and the shared-memory lockstep barrier they meet at (lockstep.py). docs/multinode.md.
"""
