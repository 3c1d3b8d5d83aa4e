"""The root of lnemu's typed errors.

Every error lnemu raises on purpose derives from :class:`LnemuError` and carries a
short machine-readable ``code`` (used in control-RPC error replies) next to its
human message. Modules define their own subclasses next to the code that raises them.
"""
from __future__ import annotations


class LnemuError(Exception):
    """Base of every typed lnemu error; ``code`` names the kind for RPC replies."""

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class DecodeError(LnemuError):
    """Bytes or structures that do not parse as what they claim to be."""

    code = "decode_error"


class BadRequest(LnemuError):
    """A control-RPC request with a wrong verb, missing or malformed arguments."""

    code = "bad_request"


class NotFound(LnemuError):
    """The thing asked about (peer, transaction, block, channel) does not exist."""

    code = "not_found"
