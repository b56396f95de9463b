"""Actor key serialization, byte-identical to RivetKit's ``keys.ts`` (spec §3.3, §4.2).

An actor key is a list of strings. Two string forms exist on the wire:

* the **escaped form** (:func:`serialize_key` / :func:`parse_key`) used by ``/actors``, the
  ``key`` field of actor objects and the ``x-rivet-actor-key`` header: parts are joined with
  ``/``; inside a part ``\\`` is written ``\\\\`` and ``/`` is written ``\\/``; an empty part is
  ``\\0``; the empty key is ``/``.
* the **query form** (:func:`parse_query_key`) of the gateway's ``rvt-key`` parameter: the
  parts joined with ``,`` and no escaping at all, so it is lossy (``["x,y"]`` reads back as
  ``["x", "y"]`` and ``[""]`` as ``[]``).

Examples::

    >>> serialize_key(["a/b", "c\\\\d"])
    'a\\\\/b/c\\\\\\\\d'
    >>> parse_key("\\\\0/e")
    ['', 'e']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["EMPTY_KEY", "KEY_SEPARATOR", "parse_key", "parse_query_key", "serialize_key"]

EMPTY_KEY: Final = "/"
"""Serialized form of the empty key ``[]``."""

KEY_SEPARATOR: Final = "/"

_EMPTY_PART: Final = "\\0"


def _escape(part: str) -> str:
    if not part:
        return _EMPTY_PART
    if "\\" in part:
        part = part.replace("\\", "\\\\")
    if "/" in part:
        part = part.replace("/", "\\/")
    return part


def serialize_key(key: Sequence[str]) -> str:
    """Serialize an actor key to its escaped string form.

    Args:
        key: the key parts. A bare ``str`` is rejected because it would be split into
            characters by accident.

    Returns:
        The escaped form, e.g. ``["c-x", "second"]`` → ``"c-x/second"``, ``[]`` → ``"/"``.

    Raises:
        TypeError: if ``key`` is a ``str`` or a part is not a ``str``.
    """
    if isinstance(key, str):
        raise TypeError("actor key must be a sequence of strings, not a str")
    if not key:
        return EMPTY_KEY
    for part in key:
        if not isinstance(part, str):
            raise TypeError(f"actor key parts must be str, got {type(part).__name__}")
    return KEY_SEPARATOR.join(_escape(part) for part in key)


def parse_key(value: str | None) -> list[str]:
    """Parse the escaped string form back into key parts (inverse of :func:`serialize_key`).

    Mirrors the reference parser exactly, including its leniency: ``None``, ``""`` and ``"/"``
    are the empty key; ``\\x`` is the literal ``x`` for any other character; a trailing lone
    ``\\`` is a literal backslash.

    Args:
        value: the serialized key.

    Returns:
        The key parts.
    """
    if not value or value == EMPTY_KEY:
        return []
    if "\\" not in value:
        return value.split(KEY_SEPARATOR)

    parts: list[str] = []
    current: list[str] = []
    escaping = False
    empty_marker = False
    for char in value:
        if escaping:
            if char == "0":
                empty_marker = True
            else:
                current.append(char)
            escaping = False
        elif char == "\\":
            escaping = True
        elif char == KEY_SEPARATOR:
            parts.append("" if empty_marker else "".join(current))
            empty_marker = False
            current.clear()
        else:
            current.append(char)

    if escaping:
        parts.append("".join(current) + "\\")
    elif empty_marker:
        parts.append("")
    elif current or parts:
        parts.append("".join(current))
    return parts


def parse_query_key(value: str | None) -> list[str]:
    """Parse the gateway's ``rvt-key`` query value (already form-decoded).

    The value is split on ``,`` without any unescaping; a missing or empty value is the
    empty key.

    Args:
        value: the decoded parameter value, or ``None`` when absent.

    Returns:
        The key parts, e.g. ``"a,b"`` → ``["a", "b"]``.
    """
    if not value:
        return []
    return value.split(",")
