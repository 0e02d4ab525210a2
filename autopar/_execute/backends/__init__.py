"""Execution backends: one module per kind, all behind the protocol in :mod:`.base`."""
