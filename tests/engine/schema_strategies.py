"""Hypothesis strategies built from a BARE schema (the envoy codec tests, v8 and v6)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

_INTS = {
    "u8": (0, 2**8 - 1), "u16": (0, 2**16 - 1), "u32": (0, 2**32 - 1), "u64": (0, 2**64 - 1),
    "uint": (0, 2**64 - 1), "i8": (-(2**7), 2**7 - 1), "i16": (-(2**15), 2**15 - 1),
    "i32": (-(2**31), 2**31 - 1), "i64": (-(2**63), 2**63 - 1), "int": (-(2**63), 2**63 - 1),
}  # fmt: skip


class Strategies:
    """Hypothesis strategies for the types of one schema, building that schema's classes."""

    def __init__(
        self, codegen: ModuleType, schema: Path, module: ModuleType, *, size: int = 8
    ) -> None:
        self.cg = codegen
        self.size = size  # longest str / bytes; collections get at most a quarter of it
        self.mod = module
        self.decls = {d.name: d for d in codegen.parse_schema(schema.read_text())}
        self._cache: dict[str, st.SearchStrategy[Any]] = {}

    def named(self, name: str) -> st.SearchStrategy[Any]:
        if name not in self._cache:
            self._cache[name] = st.deferred(lambda: self._named(name))
        return self._cache[name]

    def _named(self, name: str) -> st.SearchStrategy[Any]:
        cg, t = self.cg, self.decls[name].type
        cls = getattr(self.mod, name)
        if isinstance(t, cg.Struct):
            return st.builds(cls, **{cg.snake(f.name): self.expr(f.type) for f in t.fields})
        if isinstance(t, cg.Void):
            return st.builds(cls)
        if isinstance(t, cg.Enum):
            return st.sampled_from(list(cls))
        if isinstance(t, cg.Union):
            return st.one_of([self.named(member) for member, _ in t.members])
        if isinstance(t, cg.ListOf) and isinstance(cls, type):
            return st.builds(cls, items=self.expr(t))
        return self.expr(t)

    def expr(self, t: Any) -> st.SearchStrategy[Any]:
        cg = self.cg
        if isinstance(t, cg.Prim):
            if t.name in _INTS:
                return st.integers(*_INTS[t.name])
            if t.name == "bool":
                return st.booleans()
            if t.name == "str":
                return st.text(max_size=self.size)
            if t.name == "data":
                return st.binary(max_size=self.size)
            raise AssertionError(t.name)
        if isinstance(t, cg.FixedData):
            return st.binary(min_size=t.length, max_size=t.length)
        if isinstance(t, cg.Optional):
            return st.none() | self.expr(t.inner)
        if isinstance(t, cg.ListOf):
            return st.lists(self.expr(t.inner), max_size=self.size // 4)
        if isinstance(t, cg.MapOf):
            return st.dictionaries(self.expr(t.key), self.expr(t.value), max_size=self.size // 4)
        if isinstance(t, cg.Ref):
            decl = self.decls[t.name].type
            if isinstance(decl, cg.ListOf) and not isinstance(getattr(self.mod, t.name), type):
                return self.expr(decl)
            return self.named(t.name)
        raise AssertionError(repr(t))
