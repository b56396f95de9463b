"""BARE schema -> Python codec generator (stdlib only).

Reads a BARE schema (https://baremessages.org, the ``type Name <type>`` syntax used by Rivet's
``.bare`` files) and writes one Python module with:

* a ``@dataclass(slots=True)`` per ``struct`` (schema type name, snake_case fields in schema
  order), an empty one per ``void`` type, and a one-field (``items``) one per ``list`` alias that
  is a union member (a union must be able to tell its members apart by class);
* an ``enum.IntEnum`` per ``enum``;
* a ``TypeAlias`` per ``union`` (the union of its member classes) and per plain alias
  (``type Id str`` -> ``Id: TypeAlias = str``);
* for every *root* type, ``encode_<snake name>(value) -> bytes`` and
  ``decode_<snake name>(data) -> value``.

Why generated straight-line code rather than a schema interpreter: these codecs sit on the hot
path of every engine-mode action. Each type gets its own ``_dec_X(buf, pos) -> (value, pos)`` and
``_enc_X(out, value)``; varints, strings and optionals are inlined with a one-byte fast path,
runs of fixed-width fields become one ``struct.Struct`` call, lists of fixed-width numbers one
``struct`` call, and unions dispatch through a tuple (decode) or a dict keyed by class (encode).
No reflection happens at run time.

Decoding is strict (like the generated TypeScript codecs): truncated input, trailing bytes,
bool/optional bytes other than 0/1, non-canonical or oversized varints, invalid UTF-8, unknown
union tags or enum values and duplicate map keys raise ``rivetkit._protocol.DecodeError``.
Encoding raises ``TypeError`` (wrong class in a union, wrong Python type) or ``ValueError``
(number out of range, ``data[N]`` of the wrong length, unknown enum value).

Usage::

    python tools/bare_codegen.py src/rivetkit/_protocol/schemas/envoy_v8.bare \\
        src/rivetkit/_protocol/_generated/envoy_v8.py --root ToRivet --root ToEnvoy
    python tools/bare_codegen.py ... --check   # exit 1 if the committed file is stale

The ``envoy_v8`` and ``envoy_v6`` modules of this repository are produced by :func:`main` with
:data:`ENVOY_V8` and :data:`ENVOY_V6` (all of :data:`JOBS`).
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "ACTOR_PERSIST",
    "ENVOY_V6",
    "ENVOY_V8",
    "GENERATED_INIT",
    "Job",
    "SchemaError",
    "generate",
    "main",
    "parse_schema",
]

ROOT = Path(__file__).resolve().parent.parent


class SchemaError(ValueError):
    """The schema text is malformed or uses something the generator does not support."""


# ---------------------------------------------------------------------------------------------
# Schema model


@dataclass(frozen=True, slots=True)
class Prim:
    """A primitive: ``uint int u8..u64 i8..i64 f32 f64 bool str data``."""

    name: str


@dataclass(frozen=True, slots=True)
class FixedData:
    """``data[N]``."""

    length: int


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to a named type."""

    name: str


@dataclass(frozen=True, slots=True)
class Optional:
    inner: TypeExpr


@dataclass(frozen=True, slots=True)
class ListOf:
    inner: TypeExpr


@dataclass(frozen=True, slots=True)
class MapOf:
    key: TypeExpr
    value: TypeExpr


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: TypeExpr
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Struct:
    fields: tuple[Field, ...]


@dataclass(frozen=True, slots=True)
class Union:
    members: tuple[tuple[str, int], ...]  # (type name, tag)


@dataclass(frozen=True, slots=True)
class Enum:
    values: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Void:
    pass


TypeExpr = Prim | FixedData | Ref | Optional | ListOf | MapOf | Struct | Union | Enum | Void


@dataclass(slots=True)
class Decl:
    """``type <name> <type>`` with the comments attached to it."""

    name: str
    type: TypeExpr
    doc: str = ""


# Fixed-width numbers: struct format character and size.
_FIXED: dict[str, tuple[str, int]] = {
    "u8": ("B", 1),
    "u16": ("H", 2),
    "u32": ("I", 4),
    "u64": ("Q", 8),
    "i8": ("b", 1),
    "i16": ("h", 2),
    "i32": ("i", 4),
    "i64": ("q", 8),
    "f32": ("f", 4),
    "f64": ("d", 8),
}
_PRIMS = {*_FIXED, "uint", "int", "bool", "str", "data"}


# ---------------------------------------------------------------------------------------------
# Parser

_TOKEN = re.compile(r"\s*(?:(#[^\n]*)|([A-Za-z_][A-Za-z0-9_]*)|(\d+)|([{}<>\[\]|:=])|(\S))")


@dataclass(slots=True)
class _Tok:
    kind: str  # "id", "num", "punct"
    text: str
    line: int


def _tokenize(text: str) -> tuple[list[_Tok], dict[int, str], set[int]]:
    """Tokens, comments by line, and the lines that hold a comment only."""
    tokens: list[_Tok] = []
    comments: dict[int, str] = {}
    comment_only: set[int] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        pos = 0
        had_code = False
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            if m is None:  # only trailing whitespace left
                break
            pos = m.end()
            comment, ident, num, punct, bad = m.groups()
            if comment is not None:
                comments[lineno] = comment[1:].strip()
                if not had_code:
                    comment_only.add(lineno)
                break
            if bad is not None:
                raise SchemaError(f"line {lineno}: unexpected character {bad!r}")
            had_code = True
            if ident is not None:
                tokens.append(_Tok("id", ident, lineno))
            elif num is not None:
                tokens.append(_Tok("num", num, lineno))
            else:
                tokens.append(_Tok("punct", punct or "", lineno))
    return tokens, comments, comment_only


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens, self.comments, self.comment_only = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise SchemaError(f"unexpected end of schema, expected {what}")
        self.i += 1
        return tok

    def expect(self, text: str) -> _Tok:
        tok = self.next(repr(text))
        if tok.text != text:
            raise SchemaError(f"line {tok.line}: expected {text!r}, got {tok.text!r}")
        return tok

    def ident(self, what: str) -> _Tok:
        tok = self.next(what)
        if tok.kind != "id":
            raise SchemaError(f"line {tok.line}: expected {what}, got {tok.text!r}")
        return tok

    def number(self) -> int:
        tok = self.next("a number")
        if tok.kind != "num":
            raise SchemaError(f"line {tok.line}: expected a number, got {tok.text!r}")
        return int(tok.text)

    def doc_above(self, line: int) -> list[str]:
        """The comment-only lines directly above ``line`` (section ``MARK:`` lines excluded)."""
        docs: list[str] = []
        above = line - 1
        while above in self.comment_only:
            text = self.comments[above]
            if text.startswith("MARK:"):
                break
            docs.insert(0, text)
            above -= 1
        return docs

    def parse(self) -> list[Decl]:
        decls: list[Decl] = []
        seen: set[str] = set()
        while self.peek() is not None:
            start = self.expect("type")
            name = self.ident("a type name").text
            if name in seen:
                raise SchemaError(f"line {start.line}: type {name} defined twice")
            seen.add(name)
            body = self.type_expr(top=True)
            last_line = self.tokens[self.i - 1].line
            docs = self.doc_above(start.line)
            one_line = start.line == last_line and start.line not in self.comment_only
            if one_line and start.line in self.comments:
                docs.append(self.comments[start.line])
            decls.append(Decl(name, body, "\n".join(docs)))
        return decls

    def type_expr(self, *, top: bool = False) -> TypeExpr:
        tok = self.ident("a type")
        word = tok.text
        if word in ("struct", "union", "enum", "void"):
            if not top:
                raise SchemaError(f"line {tok.line}: anonymous {word} types are not supported")
            if word == "void":
                return Void()
            if word == "struct":
                return self.struct_body(tok.line)
            if word == "union":
                return self.union_body()
            return self.enum_body()
        if word == "optional":
            self.expect("<")
            inner = self.type_expr()
            self.expect(">")
            return Optional(inner)
        if word == "list":
            self.expect("<")
            inner = self.type_expr()
            self.expect(">")
            if self.peek() is not None and self.peek().text == "[":  # type: ignore[union-attr]
                raise SchemaError(f"line {tok.line}: fixed-length lists are not supported")
            return ListOf(inner)
        if word == "map":
            self.expect("<")
            key = self.type_expr()
            self.expect(">")
            self.expect("<")
            value = self.type_expr()
            self.expect(">")
            return MapOf(key, value)
        if word == "data":
            nxt = self.peek()
            if nxt is not None and nxt.text == "[":
                self.next("[")
                length = self.number()
                self.expect("]")
                if length <= 0:
                    raise SchemaError(f"line {tok.line}: data[{length}] must have a length > 0")
                return FixedData(length)
            return Prim("data")
        if word in _PRIMS:
            return Prim(word)
        if word in ("type", "void"):
            raise SchemaError(f"line {tok.line}: unexpected {word!r}")
        return Ref(word)

    def struct_body(self, start_line: int) -> Struct:
        self.expect("{")
        fields: list[Field] = []
        names: set[str] = set()
        while True:
            tok = self.peek()
            if tok is None:
                raise SchemaError("unterminated struct")
            if tok.text == "}":
                end_line = tok.line
                self.next("}")
                break
            name_tok = self.ident("a field name")
            self.expect(":")
            ftype = self.type_expr()
            if name_tok.text in names:
                raise SchemaError(f"line {name_tok.line}: field {name_tok.text} defined twice")
            names.add(name_tok.text)
            fields.append(Field(name_tok.text, ftype))
            fields[-1] = Field(name_tok.text, ftype, self._field_doc(name_tok.line, start_line))
        if not fields:
            raise SchemaError(f"line {start_line}: empty struct (use void)")
        if end_line == start_line:  # one-line struct: a trailing comment documents the type
            fields = [Field(f.name, f.type) for f in fields]
        return Struct(tuple(fields))

    def _field_doc(self, line: int, start_line: int) -> str:
        if line == start_line or line in self.comment_only:
            return ""
        return self.comments.get(line, "")

    def union_body(self) -> Union:
        self.expect("{")
        members: list[tuple[str, int]] = []
        tag = 0
        while True:
            name = self.ident("a union member").text
            nxt = self.peek()
            if nxt is not None and nxt.text == "=":
                self.next("=")
                tag = self.number()
            if any(tag == t for _, t in members):
                raise SchemaError(f"union tag {tag} used twice")
            if any(name == n for n, _ in members):
                raise SchemaError(f"union member {name} listed twice")
            members.append((name, tag))
            tag += 1
            sep = self.next("'|' or '}'")
            if sep.text == "}":
                break
            if sep.text != "|":
                raise SchemaError(f"line {sep.line}: expected '|' or '}}', got {sep.text!r}")
        return Union(tuple(members))

    def enum_body(self) -> Enum:
        self.expect("{")
        values: list[tuple[str, int]] = []
        value = 0
        while True:
            tok = self.next("an enum value or '}'")
            if tok.text == "}":
                break
            if tok.kind != "id":
                raise SchemaError(f"line {tok.line}: expected an enum value, got {tok.text!r}")
            nxt = self.peek()
            if nxt is not None and nxt.text == "=":
                self.next("=")
                value = self.number()
            if any(value == v for _, v in values) or any(tok.text == n for n, _ in values):
                raise SchemaError(f"line {tok.line}: duplicate enum value {tok.text}")
            values.append((tok.text, value))
            value += 1
        if not values:
            raise SchemaError("empty enum")
        return Enum(tuple(values))


def parse_schema(text: str) -> list[Decl]:
    """Parse BARE schema text into declarations, in schema order.

    Raises:
        SchemaError: on syntax errors, duplicate names and unknown type references.
    """
    decls = _Parser(text).parse()
    names = {d.name for d in decls}

    def check(expr: TypeExpr, where: str) -> None:
        if isinstance(expr, Ref):
            if expr.name not in names:
                raise SchemaError(f"{where}: unknown type {expr.name}")
        elif isinstance(expr, Optional | ListOf):
            check(expr.inner, where)
        elif isinstance(expr, MapOf):
            check(expr.key, where)
            check(expr.value, where)
        elif isinstance(expr, Struct):
            for f in expr.fields:
                check(f.type, f"{where}.{f.name}")
        elif isinstance(expr, Union):
            for member, _ in expr.members:
                if member not in names:
                    raise SchemaError(f"{where}: unknown union member {member}")

    for decl in decls:
        check(decl.type, decl.name)
    return decls


# ---------------------------------------------------------------------------------------------
# Generator


def snake(name: str) -> str:
    """``actorId`` -> ``actor_id``, ``ToRivetHTTPThing`` -> ``to_rivet_http_thing``."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()
    return s + "_" if keyword.iskeyword(s) or s in ("buf", "pos", "out", "v") else s


def _fmt_name(fmt: str) -> str:
    return "_S_" + fmt.lstrip("<").replace("?", "Z")


@dataclass(slots=True)
class _Gen:
    decls: dict[str, Decl]
    union_members: set[str]
    counter: int = 0
    structs: dict[str, str] = field(default_factory=dict)  # struct format -> constant name

    # -- type classification -------------------------------------------------------------

    def is_class(self, name: str) -> bool:
        """Types that become a Python class (dataclass or IntEnum)."""
        t = self.decls[name].type
        return isinstance(t, Struct | Void | Enum) or name in self.union_members

    def resolve(self, expr: TypeExpr) -> TypeExpr:
        """Follow plain aliases (``type Id str``) down to a non-alias expression."""
        seen: set[str] = set()
        while isinstance(expr, Ref) and not self.is_class(expr.name):
            if expr.name in seen:
                raise SchemaError(f"alias cycle through {expr.name}")
            seen.add(expr.name)
            target = self.decls[expr.name].type
            if isinstance(target, Union):
                return expr
            expr = target
        return expr

    def py_type(self, expr: TypeExpr) -> str:
        expr = self.resolve(expr)
        if isinstance(expr, Prim):
            if expr.name in ("str",):
                return "str"
            if expr.name == "data":
                return "bytes"
            if expr.name == "bool":
                return "bool"
            if expr.name in ("f32", "f64"):
                return "float"
            return "int"
        if isinstance(expr, FixedData):
            return "bytes"
        if isinstance(expr, Ref):
            return expr.name
        if isinstance(expr, Optional):
            return f"{self.py_type(expr.inner)} | None"
        if isinstance(expr, ListOf):
            return f"list[{self.py_type(expr.inner)}]"
        if isinstance(expr, MapOf):
            return f"dict[{self.py_type(expr.key)}, {self.py_type(expr.value)}]"
        raise SchemaError(f"unsupported field type {expr}")

    def fixed_fmt(self, expr: TypeExpr) -> tuple[str, int] | None:
        """(struct format, size) of a fixed-width type, else ``None``."""
        expr = self.resolve(expr)
        if isinstance(expr, Prim) and expr.name in _FIXED:
            return _FIXED[expr.name]
        if isinstance(expr, Prim) and expr.name == "bool":
            return ("?", 1)
        if isinstance(expr, FixedData):
            return (f"{expr.length}s", expr.length)
        return None

    def min_size(self, expr: TypeExpr, depth: int = 0) -> int:
        """Smallest encoding of a value of this type (guards list counts against the input)."""
        if depth > 50:
            return 0
        expr = self.resolve(expr)
        fixed = self.fixed_fmt(expr)
        if fixed is not None:
            return fixed[1]
        if isinstance(expr, Prim | Optional | ListOf | MapOf):
            return 1
        if isinstance(expr, Ref):
            t = self.decls[expr.name].type
            if isinstance(t, Struct):
                return sum(self.min_size(f.type, depth + 1) for f in t.fields)
            if isinstance(t, Union | Enum):
                return 1
            if isinstance(t, ListOf):
                return 1
            return 0  # void
        return 0

    def struct_const(self, fmt: str) -> str:
        name = _fmt_name(fmt)
        self.structs.setdefault(fmt, name)
        return name

    def tmp(self, base: str) -> str:
        self.counter += 1
        return f"{base}{self.counter}"

    # -- decoding ------------------------------------------------------------------------

    def dec_uint(self, target: str, out: list[str], ind: str) -> None:
        out += [
            f"{ind}{target} = buf[pos]",
            f"{ind}if {target} < 0x80:",
            f"{ind}    pos += 1",
            f"{ind}else:",
            f"{ind}    {target}, pos = _read_uint(buf, pos)",
        ]

    def dec(self, expr: TypeExpr, target: str, out: list[str], ind: str) -> None:
        """Lines decoding ``expr`` at ``pos`` into the local ``target``."""
        expr = self.resolve(expr)
        if isinstance(expr, Prim):
            name = expr.name
            if name == "uint":
                self.dec_uint(target, out, ind)
            elif name == "int":
                raw = self.tmp("z")
                self.dec_uint(raw, out, ind)
                out.append(f"{ind}{target} = ({raw} >> 1) ^ -({raw} & 1)")
            elif name == "u8":
                out += [f"{ind}{target} = buf[pos]", f"{ind}pos += 1"]
            elif name in _FIXED:
                fmt, size = _FIXED[name]
                const = self.struct_const("<" + fmt)
                out += [f"{ind}{target} = {const}.unpack_from(buf, pos)[0]", f"{ind}pos += {size}"]
            elif name == "bool":
                raw = self.tmp("b")
                out += [
                    f"{ind}{raw} = buf[pos]",
                    f"{ind}if {raw} > 1:",
                    f'{ind}    raise _invalid("bool", {raw}, pos)',
                    f"{ind}pos += 1",
                    f"{ind}{target} = {raw} == 1",
                ]
            else:  # str / data
                n, end = self.tmp("n"), self.tmp("e")
                self.dec_uint(n, out, ind)
                value = f"buf[pos:{end}]" + (".decode()" if name == "str" else "")
                out += [
                    f"{ind}{end} = pos + {n}",
                    f"{ind}if {end} > len(buf):",
                    f'{ind}    raise _truncated("{name}", pos, {n}, len(buf))',
                    f"{ind}{target} = {value}",
                    f"{ind}pos = {end}",
                ]
        elif isinstance(expr, FixedData):
            out += [
                f"{ind}{target} = buf[pos : pos + {expr.length}]",
                f"{ind}if len({target}) != {expr.length}:",
                f'{ind}    raise _truncated("data[{expr.length}]", pos, {expr.length}, len(buf))',
                f"{ind}pos += {expr.length}",
            ]
        elif isinstance(expr, Ref):
            out.append(f"{ind}{target}, pos = _dec_{expr.name}(buf, pos)")
        elif isinstance(expr, Optional):
            flag = self.tmp("f")
            out += [
                f"{ind}{flag} = buf[pos]",
                f"{ind}pos += 1",
                f"{ind}{target}: {self.py_type(expr)} = None",
                f"{ind}if {flag} == 1:",
            ]
            if isinstance(self.resolve(expr.inner), ListOf | MapOf | Optional):
                inner = self.tmp("x")  # these declare their local's type: use a fresh one
                self.dec(expr.inner, inner, out, ind + "    ")
                out.append(f"{ind}    {target} = {inner}")
            else:
                self.dec(expr.inner, target, out, ind + "    ")
            out += [
                f"{ind}elif {flag}:",
                f'{ind}    raise _invalid("optional flag", {flag}, pos - 1)',
            ]
        elif isinstance(expr, ListOf):
            self.dec_list(expr, target, out, ind)
        elif isinstance(expr, MapOf):
            count, key, value = self.tmp("c"), self.tmp("k"), self.tmp("v")
            self.dec_uint(count, out, ind)
            self.count_guard(count, self.min_size(expr.key) + self.min_size(expr.value), out, ind)
            out += [f"{ind}{target}: {self.py_type(expr)} = {{}}", f"{ind}for _ in range({count}):"]
            self.dec(expr.key, key, out, ind + "    ")
            self.dec(expr.value, value, out, ind + "    ")
            out += [
                f"{ind}    {target}[{key}] = {value}",
                f"{ind}if len({target}) != {count}:",
                f'{ind}    raise DecodeError(f"BARE: duplicate map key before offset {{pos}}")',
            ]
        else:
            raise SchemaError(f"cannot decode {expr}")

    def count_guard(self, count: str, min_size: int, out: list[str], ind: str) -> None:
        if min_size <= 0:
            out += [
                f"{ind}if {count} > _MAX_EMPTY_ITEMS:",
                f'{ind}    raise DecodeError(f"BARE: {{{count}}} zero-size items at offset {{pos}}")',
            ]
            return
        need = count if min_size == 1 else f"{count} * {min_size}"
        out += [
            f"{ind}if {need} > len(buf) - pos:",
            f'{ind}    raise _truncated("list", pos, {need}, len(buf))',
        ]

    def dec_list(self, expr: ListOf, target: str, out: list[str], ind: str) -> None:
        count = self.tmp("c")
        self.dec_uint(count, out, ind)
        inner = self.resolve(expr.inner)
        if isinstance(inner, Prim) and inner.name in _FIXED and inner.name != "u8":
            fmt, size = _FIXED[inner.name]
            self.count_guard(count, size, out, ind)
            out += [
                f'{ind}{target}: {self.py_type(expr)} = list(struct.unpack_from(f"<{{{count}}}{fmt}", buf, pos))',
                f"{ind}pos += {count} * {size}",
            ]
            return
        self.count_guard(count, self.min_size(inner), out, ind)
        item = self.tmp("i")
        out += [f"{ind}{target}: {self.py_type(expr)} = []", f"{ind}for _ in range({count}):"]
        self.dec(inner, item, out, ind + "    ")
        out.append(f"{ind}    {target}.append({item})")

    def dec_struct_fields(self, fields: Sequence[Field], out: list[str]) -> list[str]:
        """Decode every field into a local; returns the argument expressions, in order."""
        args: list[str] = []
        i = 0
        while i < len(fields):
            run: list[tuple[Field, tuple[str, int]]] = []
            while i < len(fields):
                fixed = self.fixed_fmt(fields[i].type)
                if fixed is None:
                    break
                run.append((fields[i], fixed))
                i += 1
            if len(run) >= 2:
                fmt = "<" + "".join("B" if f == "?" else f for _, (f, _) in run)
                size = sum(s for _, (_, s) in run)
                names = [self.tmp(snake(f.name)[:12] + "_") for f, _ in run]
                const = self.struct_const(fmt)
                out.append(f"    {', '.join(names)} = {const}.unpack_from(buf, pos)")
                for (f, (code, _)), name in zip(run, names):
                    if code == "?":
                        out += [
                            f"    if {name} > 1:",
                            f'        raise _invalid("bool", {name}, pos)',
                        ]
                        args.append(f"{name} == 1")
                    else:
                        args.append(name)
                out.append(f"    pos += {size}")
                continue
            if run:
                i -= 1  # a single fixed field: decode it the ordinary way
            f = fields[i]
            i += 1
            name = self.tmp(snake(f.name)[:12] + "_")
            self.dec(f.type, name, out, "    ")
            args.append(name)
        return args

    # -- encoding ------------------------------------------------------------------------

    def enc_uint(self, value: str, out: list[str], ind: str, *, length: bool = False) -> None:
        """``value`` must be a plain local name (it is read twice); lengths are never < 0."""
        out += [
            f"{ind}if {value} < 0x80:" if length else f"{ind}if 0 <= {value} < 0x80:",
            f"{ind}    out.append({value})",
            f"{ind}else:",
            f"{ind}    out += encode_uint({value})",
        ]

    def local(self, value: str, out: list[str], ind: str, base: str = "t") -> str:
        if value.isidentifier():
            return value
        name = self.tmp(base)
        out.append(f"{ind}{name} = {value}")
        return name

    def enc(self, expr: TypeExpr, value: str, out: list[str], ind: str) -> None:
        """Lines appending the encoding of ``value`` (an expression) to ``out``."""
        expr = self.resolve(expr)
        if isinstance(expr, Prim):
            name = expr.name
            if name == "uint":
                self.enc_uint(self.local(value, out, ind), out, ind)
            elif name == "int":
                v = self.local(value, out, ind)
                z = self.tmp("z")
                out.append(f"{ind}{z} = ({v} << 1) ^ ({v} >> 63)")
                out += [
                    f"{ind}if not -0x8000000000000000 <= {v} <= 0x7FFFFFFFFFFFFFFF:",
                    f'{ind}    raise ValueError(f"int out of range: {{{v}}}")',
                ]
                self.enc_uint(z, out, ind)
            elif name == "u8":
                out.append(f"{ind}out.append({value})")
            elif name in _FIXED:
                const = self.struct_const("<" + _FIXED[name][0])
                out.append(f"{ind}out += {const}.pack({value})")
            elif name == "bool":
                out.append(f"{ind}out.append(1 if {value} else 0)")
            else:
                raw = self.tmp("r")
                conv = ".encode()" if name == "str" else ""
                if name == "data":
                    raw = self.local(value, out, ind, "r")
                else:
                    out.append(f"{ind}{raw} = {value}{conv}")
                n = self.tmp("n")
                out.append(f"{ind}{n} = len({raw})")
                self.enc_uint(n, out, ind, length=True)
                out.append(f"{ind}out += {raw}")
        elif isinstance(expr, FixedData):
            v = self.local(value, out, ind)
            out += [
                f"{ind}if len({v}) != {expr.length}:",
                f'{ind}    raise ValueError(f"data[{expr.length}] needs {expr.length} bytes, got {{len({v})}}")',
                f"{ind}out += {v}",
            ]
        elif isinstance(expr, Ref):
            out.append(f"{ind}_enc_{expr.name}(out, {value})")
        elif isinstance(expr, Optional):
            v = self.local(value, out, ind, "o")
            out += [f"{ind}if {v} is None:", f"{ind}    out.append(0)", f"{ind}else:"]
            out.append(f"{ind}    out.append(1)")
            self.enc(expr.inner, v, out, ind + "    ")
        elif isinstance(expr, ListOf):
            v = self.local(value, out, ind, "l")
            n = self.tmp("n")
            out.append(f"{ind}{n} = len({v})")
            self.enc_uint(n, out, ind, length=True)
            inner = self.resolve(expr.inner)
            if isinstance(inner, Prim) and inner.name in _FIXED and inner.name != "u8":
                out.append(f'{ind}out += struct.pack(f"<{{{n}}}{_FIXED[inner.name][0]}", *{v})')
                return
            item = self.tmp("i")
            out.append(f"{ind}for {item} in {v}:")
            self.enc(inner, item, out, ind + "    ")
        elif isinstance(expr, MapOf):
            v = self.local(value, out, ind, "m")
            n, key, val = self.tmp("n"), self.tmp("k"), self.tmp("v")
            out.append(f"{ind}{n} = len({v})")
            self.enc_uint(n, out, ind, length=True)
            out.append(f"{ind}for {key}, {val} in {v}.items():")
            self.enc(expr.key, key, out, ind + "    ")
            self.enc(expr.value, val, out, ind + "    ")
        else:
            raise SchemaError(f"cannot encode {expr}")

    def enc_struct_fields(self, fields: Sequence[Field], obj: str, out: list[str]) -> None:
        i = 0
        while i < len(fields):
            run: list[tuple[Field, tuple[str, int]]] = []
            while i < len(fields):
                fixed = self.fixed_fmt(fields[i].type)
                if fixed is None:
                    break
                run.append((fields[i], fixed))
                i += 1
            if len(run) >= 2:
                args: list[str] = []
                for f, (code, size) in run:
                    attr = f"{obj}.{snake(f.name)}"
                    if code.endswith("s"):
                        v = self.local(attr, out, "    ")
                        out += [
                            f"    if len({v}) != {size}:",
                            f'        raise ValueError(f"data[{size}] needs {size} bytes, got {{len({v})}}")',
                        ]
                        args.append(v)
                    else:
                        args.append(attr)
                const = self.struct_const("<" + "".join(c for _, (c, _) in run))
                out.append(f"    out += {const}.pack({', '.join(args)})")
                continue
            if run:
                i -= 1
            f = fields[i]
            i += 1
            self.enc(f.type, f"{obj}.{snake(f.name)}", out, "    ")


def _doc_lines(doc: str, ind: str) -> list[str]:
    if not doc:
        return []
    text = doc.replace('"""', "'''")
    if "\n" not in text and len(ind) + len(text) + 6 <= 100:
        return [f'{ind}"""{text}"""']
    return [
        f'{ind}"""',
        *(f"{ind}{line}" if line else "" for line in text.splitlines()),
        f'{ind}"""',
    ]




_ROOT_TEMPLATE = '''

def decode_{fn}(data: bytes | bytearray | memoryview) -> {root}:
    """Decode one BARE ``{root}``; the whole input must be consumed.

    Raises:
        DecodeError: on truncated, trailing or malformed bytes.
    """
    buf = data if type(data) is bytes else bytes(data)
    try:
        value, pos = _dec_{root}(buf, 0)
    except (IndexError, struct.error):
        raise DecodeError(f"BARE {root}: truncated message ({{len(buf)}} bytes)") from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"BARE {root}: invalid UTF-8 in str: {{exc}}") from None
    _finish("{root}", buf, pos)
    return value


def encode_{fn}(value: {root}) -> bytes:
    """Encode one ``{root}`` as BARE.

    Raises:
        TypeError: a value of the wrong Python type or union member class.
        ValueError: a number out of range, ``data[N]`` of the wrong length.
    """
    out = bytearray()
    try:
        _enc_{root}(out, value)
    except struct.error as exc:
        raise ValueError(f"BARE {root}: {{exc}}") from None
    except AttributeError as exc:
        raise TypeError(f"BARE {root}: {{exc}}") from None
    return bytes(out)'''

_ANY_TEMPLATE = '''

def encode_value(value: object) -> bytes:
    """Encode an instance of any class of the schema (struct, void, enum or list type)."""
    return _encode_value(_CLASS_CODECS, value)


def decode_value(cls: type[_T], data: bytes | bytearray | memoryview) -> _T:
    """Decode one value of schema class ``cls``; the whole input must be consumed."""
    return _decode_value(_CLASS_CODECS, cls, data)'''

_HEADER_TEMPLATE = '''\
# generated by tools/bare_codegen.py from {source}; do not edit
"""{title}

Dataclasses, enums and union aliases of the schema, with strict straight-line codecs.
Regenerate with ``python tools/bare_codegen.py`` after changing the schema.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar

from rivetkit._protocol import DecodeError
from rivetkit._protocol.bare import encode_uint
from rivetkit._protocol.bare_runtime import (
    MAX_EMPTY_ITEMS as _MAX_EMPTY_ITEMS,
    decode_value as _decode_value,
    encode_value as _encode_value,
    finish as _finish,
    invalid as _invalid,
    read_uint as _read_uint,
    truncated as _truncated,
    unknown_tag as _unknown_tag,
)

__all__ = [
{exports}
]

_T = TypeVar("_T")'''


def _table(head: str, items: Sequence[str], brackets: str) -> list[str]:
    """``head = (`` one item per line ``)`` (or ``{{ }}``)."""
    return [f"{head} = {brackets[0]}", *(f"    {item}," for item in items), brackets[1]]


def _emit_types(gen: _Gen, decls: list[Decl]) -> tuple[list[str], list[str]]:
    """Source of the aliases, enums, dataclasses and union aliases; and their names."""
    aliases: list[str] = []
    enums: list[str] = []
    classes: list[str] = []
    unions: list[str] = []
    for d in decls:
        t, doc = d.type, _doc_lines(d.doc, "    ")
        if isinstance(t, Enum):
            enums += ["", "", f"class {d.name}(enum.IntEnum):", *doc]
            enums += [f"    {n} = {v}" for n, v in t.values]
        elif gen.is_class(d.name):
            classes += ["", "", "@dataclass(slots=True)", f"class {d.name}:", *doc]
            if isinstance(t, Struct):
                for f in t.fields:
                    classes += [f"    #: {f.doc}"] if f.doc else []
                    classes.append(f"    {snake(f.name)}: {gen.py_type(f.type)}")
            elif isinstance(t, ListOf):
                classes.append(f"    items: {gen.py_type(t)}")
            elif not doc:
                classes.append("    pass")
        elif isinstance(t, Union):
            unions += ["", f"{d.name}: TypeAlias = {' | '.join(m for m, _ in t.members)}"]
            unions += [f'"""{d.doc}"""'] if d.doc else []
        else:
            aliases.append(f"{d.name}: TypeAlias = {gen.py_type(t)}")
    source = [*([""] if aliases else []), *aliases, *enums, *classes, *unions]
    return source, [d.name for d in decls]


def _emit_enum(gen: _Gen, name: str, t: Enum) -> list[str]:
    n = len(t.values)
    dense = [v for _, v in t.values] == list(range(n))
    if dense:
        table = _table(f"_{name}_VALUES: Final", [f"{name}.{m}" for m, _ in t.values], "()")
        check, lookup = f"    if k >= {n}:", [f"    return _{name}_VALUES[k], pos"]
    else:
        members = [f"{v}: {name}.{m}" for m, v in t.values]
        table = _table(f"_{name}_VALUES: Final", members, "{}")
        check = f"    if (value := _{name}_VALUES.get(k)) is None:"
        lookup = ["    return value, pos"]
    out = ["", *table, "", "", f"def _dec_{name}(buf: bytes, pos: int) -> tuple[{name}, int]:"]
    gen.dec_uint("k", out, "    ")
    out += [check, f'        raise _invalid("{name} value", k, pos - 1)', *lookup]
    out += ["", "", f"def _enc_{name}(out: bytearray, v: {name}) -> None:"]
    valid = f"0 <= v < {n}" if dense else f"v in _{name}_VALUES"
    out += [f"    if not {valid}:", f'        raise ValueError(f"not a {name} value: {{v!r}}")']
    if dense and n <= 0x80:
        out.append("    out.append(v)")
    else:
        gen.enc_uint("v", out, "    ")
    return out


def _emit_union(gen: _Gen, name: str, t: Union) -> tuple[list[str], list[str]]:
    """The codec functions of a union, and its dispatch tables (emitted after all functions)."""
    n = len(t.members)
    out = ["", "", f"def _dec_{name}(buf: bytes, pos: int) -> tuple[{name}, int]:"]
    decoder_type = f"Callable[[bytes, int], tuple[{name}, int]]"
    if [tag for _, tag in t.members] == list(range(n)) and n < 0x80:
        out += [
            "    tag = buf[pos]",
            f"    if tag >= {n}:",
            f'        raise _unknown_tag("{name}", tag, pos)',
            f"    return _{name}_DECODERS[tag](buf, pos + 1)",
        ]
        head = f"_{name}_DECODERS: Final[tuple[{decoder_type}, ...]]"
        tables = _table(head, [f"_dec_{m}" for m, _ in t.members], "()")
    else:
        gen.dec_uint("tag", out, "    ")
        out += [
            f"    decoder = _{name}_DECODERS.get(tag)",
            "    if decoder is None:",
            f'        raise _unknown_tag("{name}", tag, pos)',
            "    return decoder(buf, pos)",
        ]
        head = f"_{name}_DECODERS: Final[dict[int, {decoder_type}]]"
        tables = _table(head, [f"{tag}: _dec_{m}" for m, tag in t.members], "{}")
    head = f"_{name}_ENCODERS: Final[dict[type, tuple[int, Callable[[bytearray, Any], None]]]]"
    tables += _table(head, [f"{m}: ({tag}, _enc_{m})" for m, tag in t.members], "{}")
    out += [
        "",
        "",
        f"def _enc_{name}(out: bytearray, v: {name}) -> None:",
        "    try:",
        f"        tag, encoder = _{name}_ENCODERS[type(v)]",
        "    except KeyError:",
        f'        raise TypeError(f"not a {name} member: {{type(v).__name__}}") from None',
    ]
    if max(tag for _, tag in t.members) < 0x80:
        out.append("    out.append(tag)")
    else:
        gen.enc_uint("tag", out, "    ")
    out.append("    encoder(out, v)")
    return out, tables


def _emit_codecs(gen: _Gen, d: Decl) -> tuple[list[str], list[str]]:
    """``_dec_X``/``_enc_X`` of one declaration (none for plain aliases), and its tables."""
    name, t = d.name, d.type
    gen.counter = 0  # local names restart in every function: small, stable diffs
    dec = ["", "", f"def _dec_{name}(buf: bytes, pos: int) -> tuple[{name}, int]:"]
    enc = ["", "", f"def _enc_{name}(out: bytearray, v: {name}) -> None:"]
    if isinstance(t, Enum):
        return _emit_enum(gen, name, t), []
    if isinstance(t, Union):
        return _emit_union(gen, name, t)
    if isinstance(t, Struct):
        args = gen.dec_struct_fields(t.fields, dec)
        dec.append(f"    return {name}({', '.join(args)}), pos")
        gen.enc_struct_fields(t.fields, "v", enc)
    elif isinstance(t, Void):
        dec.append(f"    return {name}(), pos")
        enc.append("    pass")
    elif name in gen.union_members and isinstance(t, ListOf):
        gen.dec(t, "items", dec, "    ")
        dec.append(f"    return {name}(items), pos")
        gen.enc(t, "v.items", enc, "    ")
    else:
        return [], []
    return dec + enc, []


def generate(decls: list[Decl], *, roots: Sequence[str], source: str, title: str = "") -> str:
    """Python source of the codec module for ``decls``.

    Args:
        decls: the parsed schema (:func:`parse_schema`).
        roots: types that get public ``encode_<snake name>``/``decode_<snake name>`` functions.
        source: schema path written in the header comment.
        title: first docstring line.

    Raises:
        SchemaError: a union member that is not a struct, void or list type; a bad root.
    """
    by_name = {d.name: d for d in decls}
    union_members: set[str] = set()
    for d in decls:
        for member, _ in d.type.members if isinstance(d.type, Union) else ():
            if not isinstance(by_name[member].type, Struct | Void | ListOf):
                raise SchemaError(
                    f"union {d.name}: member {member} must be a struct, void or list type"
                )
            union_members.add(member)
    gen = _Gen(by_name, union_members)
    for root in roots:
        if root not in by_name or not (gen.is_class(root) or isinstance(by_name[root].type, Union)):
            raise SchemaError(f"root {root} must be a struct, union, enum or void type")

    types, exported = _emit_types(gen, decls)
    body: list[str] = []
    tables: list[str] = []
    for d in decls:
        functions, dispatch = _emit_codecs(gen, d)
        body += functions
        tables += dispatch
    classes = [d.name for d in decls if gen.is_class(d.name)]
    head = (
        "_CLASS_CODECS: Final[dict[type, tuple[Callable[[bytearray, Any], None], "
        "Callable[[bytes, int], tuple[Any, int]]]]]"
    )
    tables += _table(head, [f"{n}: (_enc_{n}, _dec_{n})" for n in classes], "{}")
    public = [_ROOT_TEMPLATE.format(fn=snake(root), root=root) for root in roots]
    exported += [f"{verb}_{snake(root)}" for root in roots for verb in ("decode", "encode")]
    exported += ["decode_value", "encode_value"]

    structs = [
        f'{const}: Final = struct.Struct("{fmt}")'
        for fmt, const in sorted(gen.structs.items(), key=lambda kv: kv[1])
    ]
    header = _HEADER_TEMPLATE.format(
        source=source,
        title=title or f"BARE codec generated from {source}",
        exports="\n".join(f'    "{n}",' for n in sorted(exported)),
    )
    parts = [
        header,
        "\n".join(types),
        "\n\n" + "\n".join(structs),
        "\n".join(body),
        "\n\n" + "\n".join(tables),
        "".join(public) + _ANY_TEMPLATE,
    ]
    return "\n".join(p for p in parts if p) + "\n"


GENERATED_INIT = '''\
# generated by tools/bare_codegen.py; do not edit
"""Python codecs generated from the ``.bare`` schemas in ``rivetkit/_protocol/schemas``.

Do not import these modules from outside ``rivetkit._protocol``: wrappers such as
:mod:`rivetkit._protocol.envoy` are the interface, the generated names may change with a schema.
"""
'''


@dataclass(frozen=True, slots=True)
class Job:
    """One schema -> module generation of this repository."""

    schema: str
    output: str
    roots: tuple[str, ...]
    title: str

    def render(self, root: Path = ROOT) -> str:
        decls = parse_schema((root / self.schema).read_text(encoding="utf-8"))
        return generate(decls, roots=self.roots, source=self.schema, title=self.title)


ENVOY_V8 = Job(
    schema="src/rivetkit/_protocol/schemas/envoy_v8.bare",
    output="src/rivetkit/_protocol/_generated/envoy_v8.py",
    roots=("ToRivet", "ToEnvoy", "ToEnvoyConn", "ToGateway", "ToOutbound", "ActorCommandKeyData"),
    title="Rivet envoy protocol v8 (runtime <-> rivet-engine), BARE codec.",
)
ENVOY_V6 = Job(  # the runtime converts it to and from v8: rivetkit/_protocol/envoy_v6.py
    schema="src/rivetkit/_protocol/schemas/envoy_v6.bare",
    output="src/rivetkit/_protocol/_generated/envoy_v6.py",
    roots=("ToRivet", "ToEnvoy", "ToEnvoyConn", "ToGateway", "ToOutbound", "ActorCommandKeyData"),
    title="Rivet envoy protocol v6 (runtime <-> pre-v8 rivet-engine), BARE codec.",
)
ACTOR_PERSIST = tuple(
    Job(
        schema=f"src/rivetkit/_protocol/schemas/actor_persist_v{version}.bare",
        output=f"src/rivetkit/_protocol/_generated/actor_persist_v{version}.py",
        roots=roots,
        title=f"RivetKit actor-persist v{version} (legacy actor KV values), BARE codec.",
    )
    for version, roots in (
        (1, ("PersistedActor",)),
        (2, ("PersistedActor",)),
        (4, ("Actor", "RawArgsActor", "Conn", "QueueMetadata", "QueueMessage")),
    )
)
JOBS: Final = (ENVOY_V8, ENVOY_V6, *ACTOR_PERSIST)
INIT_PATH = "src/rivetkit/_protocol/_generated/__init__.py"


def _outputs(root: Path) -> dict[Path, str]:
    files = {root / INIT_PATH: GENERATED_INIT}
    for job in JOBS:
        files[root / job.output] = job.render(root)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate (or with ``--check`` verify) this repository's generated codecs.

    With ``SCHEMA OUTPUT --root NAME...`` it generates an arbitrary schema instead.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("schema", nargs="?", help="a .bare file (default: this repo's schemas)")
    parser.add_argument("output", nargs="?", help="the .py file to write")
    parser.add_argument("--root", action="append", default=[], help="type with encode/decode")
    parser.add_argument("--check", action="store_true", help="fail if outputs are stale")
    args = parser.parse_args(argv)
    if args.schema:
        if not args.output or not args.root:
            parser.error("SCHEMA needs OUTPUT and at least one --root")
        text = Path(args.schema).read_text(encoding="utf-8")
        files = {
            Path(args.output): generate(parse_schema(text), roots=args.root, source=args.schema)
        }
    else:
        files = _outputs(ROOT)
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path], encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
