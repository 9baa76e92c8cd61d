"""What a function's outcome may store: its error text, always storable, and its result."""

from __future__ import annotations

import json
import traceback
from typing import Any

from ..conf import scheduler_settings

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


def storable_result(name: str, value: Any) -> Any:
    """``value`` as the ``result`` a function stores, or a ``TypeError`` saying why not.

    A result must be JSON (finite numbers, string keys, no NUL or lone
    surrogates, which databases refuse) of at most ``MAX_RESULT_BYTES`` once
    encoded.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(
            f"{name!r} returned {type(value).__name__}, which cannot be stored as its result: "
            f"a result must be JSON ({exc})."
        ) from None
    if "\\u0000" in text:
        raise TypeError(f"{name!r} returned text with NUL (U+0000), which databases cannot store.")
    limit = scheduler_settings.MAX_RESULT_BYTES
    if size > limit:
        raise TypeError(
            f"{name!r} returned {size} bytes of JSON; a result may be at most {limit} bytes "
            "(setting MAX_RESULT_BYTES)."
        )
    return value
