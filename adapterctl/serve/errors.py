"""The server's own errors; all are ``AdapterError``, so the CLI prints them as one line and the
HTTP layer maps each to its status (``app.STATUS``)."""

from __future__ import annotations

from ..errors import AdapterConfigError, AdapterError


class RequestTooLargeError(AdapterError, ValueError):
    """A text, a list of texts or a request body over the server's limits (HTTP 413)."""


class AdapterNameTakenError(AdapterConfigError):
    """A load under a name that is already loaded (HTTP 409)."""


class UnservableAdapterError(AdapterConfigError):
    """An adapter the endpoint cannot answer with: no head, or a head of another kind (HTTP 422)."""
