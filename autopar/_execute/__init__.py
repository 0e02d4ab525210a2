"""Running: a Plan over a call's items, on the program-wide pool of its kind.

Nothing here decides or imports :mod:`autopar._auto`. Process workers import
:mod:`.worker`, so this package must stay light.
"""
