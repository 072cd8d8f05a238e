"""The exceptions every part of the library raises."""

from __future__ import annotations


class PKIError(Exception):
    """Anything this module refuses to do; the message is meant for the operator."""


class InputError(PKIError, ValueError):
    """A bad argument.  The message starts with the parameter's name."""


class SetError(PKIError):
    """An existing certificate set that cannot be used or extended safely."""


class RotationRefused(PKIError):
    """A stage asked for out of order; the message says which stage comes first."""
