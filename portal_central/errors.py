"""The portal's named errors; ``app.py`` maps each to a status code, a JSON body or a page."""

from __future__ import annotations


class PortalError(Exception):
    """An error a user can act on. ``field`` names the form or JSON field it concerns."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class FieldInvalid(PortalError):
    status_code = 422


class Unauthorized(PortalError):
    status_code = 401


class Forbidden(PortalError):
    status_code = 403


class NotFound(PortalError):
    status_code = 404


class Conflict(PortalError):
    status_code = 409


class InvalidTransition(Conflict):
    """A state change that the transition table does not allow."""
