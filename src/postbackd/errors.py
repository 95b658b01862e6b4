"""Errors that travel to the user, each naming the field at fault and the reason.

    PostbackdError
     └── ApiError (status, code, message, field)
          ├── BadRequest      400  the body cannot be read at all (not JSON, not UTF-8)
          ├── Unauthorized    401  missing or wrong bearer token
          ├── NotFound        404  the path names an entity that does not exist
          ├── Conflict        409  a uniqueness rule (names, one postback per event, ids)
          ├── TooLarge        413  the body is over the size limit
          ├── Invalid         422  a field breaks a rule of PRODUCT.md section 1
          └── StoreUnavailable 503 the store cannot write (disk full, I/O error): nothing
                                   of the request was committed; send it again later

The rules (model, validation) raise these without knowing about HTTP; the API turns them
into `{"error": {"code", "message", "field"}}` with the status.
"""

from __future__ import annotations


class PostbackdError(Exception):
    """Base of every error postbackd raises on purpose."""


class ApiError(PostbackdError):
    status = 500
    default_code = "error"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code or self.default_code

    def to_json(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class BadRequest(ApiError):
    status = 400
    default_code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    default_code = "unauthorized"


class NotFound(ApiError):
    status = 404
    default_code = "not_found"


class Conflict(ApiError):
    status = 409
    default_code = "conflict"


class TooLarge(ApiError):
    status = 413
    default_code = "too_large"


class Invalid(ApiError):
    status = 422
    default_code = "invalid"


class StoreUnavailable(ApiError):
    """A commit failed for a reason of the store, not of the request (PRODUCT.md 2, "Store
    failures"); `kind` is the metric label (disk_full, io_error, busy, corrupt, closed)."""

    status = 503
    default_code = "store_unavailable"

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
