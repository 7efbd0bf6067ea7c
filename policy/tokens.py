"""Tokenizer of Calico's selector language.

Words (label names and keywords alike) are one token kind: whether ``in`` or ``has`` is a
keyword depends on where it stands, which the parser knows and the tokenizer does not. That
lets a label be called ``has`` or ``in`` without surprises, and keeps error positions exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class SelectorError(ValueError):
    """A selector does not parse. ``position`` is the 0-based character offset of the problem."""

    def __init__(self, text: str, position: int, expected: str):
        self.text = text
        self.position = position
        self.expected = expected
        super().__init__(f"selector {text!r} at position {position}: {expected}")


class Tok(Enum):
    WORD = "a label"
    STRING = "a quoted string"
    LBRACE = "'{'"
    RBRACE = "'}'"
    COMMA = "','"
    LPAREN = "'('"
    RPAREN = "')'"
    EQ = "'=='"
    NE = "'!='"
    NOT = "'!'"
    AND = "'&&'"
    OR = "'||'"
    EOF = "end of selector"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Tok
    pos: int
    end: int
    value: str = ""


MAX_WORD = 512
_WORD = re.compile(r"[a-zA-Z0-9_./-]+")
_PUNCT: dict[str, Tok] = {
    "==": Tok.EQ,
    "!=": Tok.NE,
    "&&": Tok.AND,
    "||": Tok.OR,
    "{": Tok.LBRACE,
    "}": Tok.RBRACE,
    ",": Tok.COMMA,
    "(": Tok.LPAREN,
    ")": Tok.RPAREN,
    "!": Tok.NOT,
}


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, always ending with an EOF token at ``len(text)``."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "\"'":
            end = text.find(ch, i + 1)
            if end < 0:
                raise SelectorError(text, i, f"unterminated string, expected a closing {ch}")
            tokens.append(Token(Tok.STRING, i, end + 1, text[i + 1 : end]))
            i = end + 1
            continue
        two = text[i : i + 2]
        if two in _PUNCT:
            tokens.append(Token(_PUNCT[two], i, i + 2))
            i += 2
            continue
        if ch in _PUNCT:
            tokens.append(Token(_PUNCT[ch], i, i + 1))
            i += 1
            continue
        m = _WORD.match(text, i)
        if m is None:
            raise SelectorError(text, i, f"unexpected character {ch!r}")
        if len(m.group()) > MAX_WORD:
            raise SelectorError(text, i, f"label longer than {MAX_WORD} characters")
        tokens.append(Token(Tok.WORD, i, m.end(), m.group()))
        i = m.end()
    tokens.append(Token(Tok.EOF, n, n))
    return tokens
