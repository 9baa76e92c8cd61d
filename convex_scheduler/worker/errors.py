"""The stored text of a failed function: always storable, whatever the exception does."""

from __future__ import annotations

import traceback

MAX_ERROR_LENGTH = 64 * 1024


def storable(text: str) -> str:
    """``text`` as every supported database can store it.

    NUL (which PostgreSQL refuses in text) and lone surrogates (which no
    UTF-8 database accepts) are written as backslash escapes, never dropped.
    """
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def first_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:
        return f"<{type(exc).__name__} whose message could not be read>"
    return text.splitlines()[0] if text else ""


def format_error(exc: BaseException) -> str:
    """The error text stored for a failed function: the message, then the traceback.

    Always storable (see :func:`storable`), whatever the exception's text is
    or does: an exception whose ``__str__`` raises gets a fixed message
    naming its type.
    """
    try:
        message = str(exc)
    except BaseException:
        message = f"<{type(exc).__name__} whose message could not be read>"
    headline = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    try:
        trace = "".join(traceback.format_exception(exc))
    except BaseException:
        trace = ""
    return storable(f"{headline}\n\n{trace}")[:MAX_ERROR_LENGTH]
