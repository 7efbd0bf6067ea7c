"""Calico's label selector language: parse once into an AST, match many times.

Grammar (precedence ``||`` < ``&&`` < unary)::

    selector := '' | or
    or       := and ('||' and)*
    and      := unary ('&&' unary)*
    unary    := '!' unary | '(' or ')' | 'all()' | 'global()' | 'has(' label ')' | label op
    op       := '==' str | '!=' str | 'in' set | 'not' 'in' set | 'notin' set
              | 'contains' str | 'starts' 'with' str | 'ends' 'with' str
    set      := '{' [str (',' str)*] '}'

Every node renders a canonical string (values quoted, ``in`` sets sorted, ``&&``/``||``
parenthesised) which is what the stable hash and the ipset names are computed from, so
``a=='x'`` and ``a == "x"`` share one ipset. ``global()`` matches what has no
``projectcalico.org/namespace`` label (non-namespaced things such as host endpoints).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from policy.tokens import SelectorError, Tok, Token, tokenize

__all__ = [
    "NAMESPACE_LABEL",
    "Selector",
    "SelectorError",
    "and_",
    "map_labels",
    "parse",
]

NAMESPACE_LABEL = "projectcalico.org/namespace"


def _quote(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


def b64hash(data: str, algo: str = "sha224") -> str:
    """base64url without padding of a digest of ``data`` (Calico's unique-ID encoding)."""
    digest = hashlib.new(algo, data.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Selector:
    """Base of the AST nodes. Nodes are frozen, hashable and compare structurally."""

    __slots__ = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        raise NotImplementedError

    def canonical(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.canonical()

    @property
    def unique_id(self) -> str:
        """Calico's selector ID: ``s:`` + base64url(sha224('s:' + canonical))."""
        return _unique_id(self.canonical())

    def labels(self) -> frozenset[str]:
        """Every label key the selector looks at."""
        return frozenset()


@lru_cache(maxsize=65536)
def _unique_id(canonical: str) -> str:
    return "s:" + b64hash("s:" + canonical)


@dataclass(frozen=True, slots=True)
class All(Selector):
    def matches(self, labels: Mapping[str, str]) -> bool:
        return True

    def canonical(self) -> str:
        return "all()"


@dataclass(frozen=True, slots=True)
class Global(Selector):
    def matches(self, labels: Mapping[str, str]) -> bool:
        return NAMESPACE_LABEL not in labels

    def canonical(self) -> str:
        return "global()"


@dataclass(frozen=True, slots=True)
class Has(Selector):
    key: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.key in labels

    def canonical(self) -> str:
        return f"has({self.key})"

    def labels(self) -> frozenset[str]:
        return frozenset((self.key,))


@dataclass(frozen=True, slots=True)
class Compare(Selector):
    """``key <op> value`` for the single-value operators."""

    key: str
    op: str  # one of OPS
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.key)
        if v is None:
            return self.op == "!="
        return _COMPARE[self.op](v, self.value)

    def canonical(self) -> str:
        return f"{self.key} {self.op} {_quote(self.value)}"

    def labels(self) -> frozenset[str]:
        return frozenset((self.key,))


_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "==": str.__eq__,
    "!=": str.__ne__,
    "contains": str.__contains__,
    "starts with": str.startswith,
    "ends with": str.endswith,
}


@dataclass(frozen=True, slots=True)
class In(Selector):
    key: str
    values: frozenset[str]
    negated: bool = False  # ``not in``: true also when the label is absent

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.key)
        if v is None:
            return self.negated
        return (v in self.values) != self.negated

    def canonical(self) -> str:
        op = "not in" if self.negated else "in"
        return f"{self.key} {op} {{{', '.join(_quote(v) for v in sorted(self.values))}}}"

    def labels(self) -> frozenset[str]:
        return frozenset((self.key,))


@dataclass(frozen=True, slots=True)
class Not(Selector):
    operand: Selector

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.operand.matches(labels)

    def canonical(self) -> str:
        return "!" + self.operand.canonical()

    def labels(self) -> frozenset[str]:
        return self.operand.labels()


@dataclass(frozen=True, slots=True)
class And(Selector):
    operands: tuple[Selector, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(o.matches(labels) for o in self.operands)

    def canonical(self) -> str:
        return "(" + " && ".join(o.canonical() for o in self.operands) + ")"

    def labels(self) -> frozenset[str]:
        return frozenset().union(*(o.labels() for o in self.operands))


@dataclass(frozen=True, slots=True)
class Or(Selector):
    operands: tuple[Selector, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return any(o.matches(labels) for o in self.operands)

    def canonical(self) -> str:
        return "(" + " || ".join(o.canonical() for o in self.operands) + ")"

    def labels(self) -> frozenset[str]:
        return frozenset().union(*(o.labels() for o in self.operands))


ALL = All()


# ---------------------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def take(self) -> Token:
        tok = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return tok

    def fail(self, expected: str, tok: Token | None = None) -> SelectorError:
        tok = tok or self.peek()
        if tok.kind is Tok.EOF:
            return SelectorError(self.text, tok.pos, f"expected {expected}")
        got = self.text[tok.pos : tok.end]
        return SelectorError(self.text, tok.pos, f"expected {expected}, got {got!r}")

    def expect(self, kind: Tok, what: str | None = None) -> Token:
        if self.peek().kind is not kind:
            raise self.fail(what or kind.value)
        return self.take()

    def is_word(self, word: str, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok.kind is Tok.WORD and tok.value == word

    def parse(self) -> Selector:
        if self.peek().kind is Tok.EOF:
            return ALL
        node = self.or_expr()
        if self.peek().kind is not Tok.EOF:
            raise self.fail("'&&', '||' or end of selector")
        return node

    def or_expr(self) -> Selector:
        ops = [self.and_expr()]
        while self.peek().kind is Tok.OR:
            self.take()
            ops.append(self.and_expr())
        return ops[0] if len(ops) == 1 else Or(tuple(ops))

    def and_expr(self) -> Selector:
        ops = [self.unary()]
        while self.peek().kind is Tok.AND:
            self.take()
            ops.append(self.unary())
        return ops[0] if len(ops) == 1 else And(tuple(ops))

    def unary(self) -> Selector:
        tok = self.peek()
        if tok.kind is Tok.NOT:
            self.take()
            return Not(self.unary())
        if tok.kind is Tok.LPAREN:
            self.take()
            node = self.or_expr()
            self.expect(Tok.RPAREN, "')'")
            return node
        if tok.kind is not Tok.WORD:
            raise self.fail("a label, '!', '(', has(), all() or global()")
        if self.peek(1).kind is Tok.LPAREN and tok.value in ("all", "global", "has"):
            return self.function(tok.value)
        self.take()
        return self.operation(tok.value)

    def function(self, name: str) -> Selector:
        self.take()
        self.take()  # the '('
        if name == "has":
            key = self.expect(Tok.WORD, "a label").value
            self.expect(Tok.RPAREN, "')'")
            return Has(key)
        self.expect(Tok.RPAREN, "')'")
        return ALL if name == "all" else Global()

    def operation(self, key: str) -> Selector:
        tok = self.peek()
        if tok.kind in (Tok.EQ, Tok.NE):
            self.take()
            return Compare(key, "==" if tok.kind is Tok.EQ else "!=", self.string())
        if tok.kind is Tok.WORD:
            word = tok.value
            if word in ("in", "notin"):
                self.take()
                return In(key, self.value_set(), negated=word == "notin")
            if word == "not" and self.is_word("in", 1):
                self.take()
                self.take()
                return In(key, self.value_set(), negated=True)
            if word in ("contains", "startswith", "endswith"):
                self.take()
                return Compare(key, word.replace("swith", "s with"), self.string())
            if word in ("starts", "ends") and self.is_word("with", 1):
                self.take()
                self.take()
                return Compare(key, f"{word} with", self.string())
        raise self.fail("an operator (==, !=, in, not in, contains, starts with, ends with)")

    def string(self) -> str:
        return self.expect(Tok.STRING).value

    def value_set(self) -> frozenset[str]:
        self.expect(Tok.LBRACE)
        values: list[str] = []
        if self.peek().kind is Tok.RBRACE:
            self.take()
            return frozenset()
        values.append(self.string())
        while self.peek().kind is Tok.COMMA:
            self.take()
            values.append(self.string())
        self.expect(Tok.RBRACE, "',' or '}'")
        return frozenset(values)


@lru_cache(maxsize=16384)
def parse(text: str) -> Selector:
    """Parse a selector (cached by text). Raises ``SelectorError`` with the position."""
    return _Parser(text).parse()


# ------------------------------------------------------------------------------- construction


def and_(*nodes: Selector) -> Selector:
    """AND of ``nodes``, dropping ``all()`` terms; ``all()`` when nothing is left."""
    ops = tuple(n for n in nodes if not isinstance(n, All))
    if not ops:
        return ALL
    return ops[0] if len(ops) == 1 else And(ops)


def map_labels(node: Selector, rename: Callable[[str], str]) -> Selector:
    """The same selector over renamed label keys (used to prefix namespace labels with ``pcns.``)."""
    match node:
        case Has(key):
            return Has(rename(key))
        case Compare(key, op, value):
            return Compare(rename(key), op, value)
        case In(key, values, negated):
            return In(rename(key), values, negated)
        case Not(operand):
            return Not(map_labels(operand, rename))
        case And(operands):
            return And(tuple(map_labels(o, rename) for o in operands))
        case Or(operands):
            return Or(tuple(map_labels(o, rename) for o in operands))
    return node


def required_equalities(node: Selector) -> list[tuple[str, str]]:
    """``(key, value)`` pairs every match must carry: ``key == value`` terms, alone or in an
    ``&&``. A label index (``policy.setindex.LabelIndex``) turns any of them into the only
    candidates worth evaluating the whole selector on; empty when there is none."""
    if isinstance(node, Compare) and node.op == "==":
        return [(node.key, node.value)]
    if isinstance(node, In) and not node.negated and len(node.values) == 1:
        return [(node.key, next(iter(node.values)))]
    if isinstance(node, And):
        return [pair for operand in node.operands for pair in required_equalities(operand)]
    return []
