"""Deciding: which of serial, threads, processes or a cluster finishes a call first.

Imports :mod:`autopar._execute` (to run what it decides); nothing there imports this.
"""
