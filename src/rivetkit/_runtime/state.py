"""Actor state: conversion between user state objects and CBOR bytes.

State may be a dict (or any CBOR-encodable value), a dataclass instance, a pydantic model or a
msgspec Struct. It is stored as CBOR of its builtin form, the same encoding the official runtime
uses for ``_rivet_actor_state.state``, so the data means the same thing to both runtimes.

Dirty detection is a snapshot diff: after each turn the state is encoded and compared with the
last committed bytes, which works for every supported type without proxies.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import cbor2

from .._protocol.cbor import cbor_dumps_compat, cbor_loads

__all__ = ["StateCodec"]


def _is_pydantic_model(cls: type) -> bool:
    return hasattr(cls, "model_validate") and hasattr(cls, "model_dump")


def _is_msgspec_struct(cls: type) -> bool:
    return hasattr(cls, "__struct_fields__")


def _dataclass_from_builtin(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"stored state for {cls.__name__} is not a map: {type(data).__name__}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolved forward references: construct shallowly
        hints = {}
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            continue  # the field's default applies (state written by an older version)
        value = data[field.name]
        hint = hints.get(field.name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _dataclass_from_builtin(hint, value)
        kwargs[field.name] = value
    return cls(**kwargs)


class StateCodec:
    """Encodes and decodes one actor kind's state.

    Attributes:
        kind: ``"plain"``, ``"dataclass"``, ``"pydantic"`` or ``"msgspec"``.
        cls: the state class for the typed kinds.
    """

    __slots__ = ("kind", "cls")

    def __init__(self, kind: str, cls: type | None = None) -> None:
        self.kind = kind
        self.cls = cls

    @classmethod
    def for_type(cls, state_type: Any) -> StateCodec:
        """The codec for states of class ``state_type`` (or plain values when not a class)."""
        if isinstance(state_type, type):
            if dataclasses.is_dataclass(state_type):
                return cls("dataclass", state_type)
            if _is_pydantic_model(state_type):
                return cls("pydantic", state_type)
            if _is_msgspec_struct(state_type):
                return cls("msgspec", state_type)
        return cls("plain")

    @classmethod
    def for_value(cls, value: Any) -> StateCodec:
        """The codec for ``value``'s type; raises ``TypeError`` if it cannot be encoded."""
        codec = cls.for_type(type(value))
        codec.encode(value)
        return codec

    def to_builtin(self, state: Any) -> Any:
        kind = self.kind
        if kind == "plain":
            return state
        if self.cls is not None and not isinstance(state, self.cls):
            raise TypeError(
                f"state must be a {self.cls.__name__} instance, got {type(state).__name__}"
            )
        if kind == "dataclass":
            return dataclasses.asdict(state)
        if kind == "pydantic":
            return state.model_dump(mode="python")
        import msgspec

        return msgspec.to_builtins(state)

    def from_builtin(self, data: Any) -> Any:
        kind = self.kind
        if kind == "plain":
            return data
        assert self.cls is not None
        if kind == "dataclass":
            return _dataclass_from_builtin(self.cls, data)
        if kind == "pydantic":
            return self.cls.model_validate(data)  # type: ignore[attr-defined]
        import msgspec

        return msgspec.convert(data, self.cls)

    def encode(self, state: Any) -> bytes:
        """CBOR bytes of ``state``. Raises ``TypeError`` naming the value that cannot be stored."""
        try:
            # The official runtime's encoding of state (JSON-compatible values in CBOR: bytes as
            # ["$Uint8Array", b64], big integers as ["$BigInt", "n"], "$"-lists escaped), so an
            # actor's state means the same to both runtimes (engine mode hosts either).
            return cbor_dumps_compat(self.to_builtin(state))
        except cbor2.CBOREncodeError as exc:
            raise TypeError(f"state cannot be encoded as CBOR: {exc}") from None

    def decode(self, data: bytes) -> Any:
        return self.from_builtin(cbor_loads(data, revive=True))

    def copy(self, state: Any) -> Any:
        """An independent copy of ``state`` (used for the ``state=`` template of each actor)."""
        return self.decode(self.encode(state))
