"""iptables argument text -> python-iptables ``Rule``, for the libiptc backend.

Handles the grammar the policy compiler emits: ``[!] -p/-s/-d/-i/-o``, ``-m <match> [!] --opt v...``,
``-j/--jump``, ``-g/--goto`` with target options. Tokens are split with shlex, so quoted comments work.
A ``--dport``-style option with no ``-m`` before it loads the protocol's match, as iptables does.
"""

from __future__ import annotations

import shlex
from typing import Any

_RULE_FIELDS = {
    "-p": "protocol", "--protocol": "protocol",
    "-s": "src", "--source": "src",
    "-d": "dst", "--destination": "dst",
    "-i": "in_interface", "--in-interface": "in_interface",
    "-o": "out_interface", "--out-interface": "out_interface",
}


def _option_values(tokens: list[str], start: int) -> tuple[list[str], int]:
    """Values after an option, up to the next option or ``!``."""
    end = start
    while end < len(tokens) and tokens[end] != "!" and not tokens[end].startswith("-"):
        end += 1
    return tokens[start:end], end


def build_rule(iptc: Any, spec: str, *, ipv6: bool = False) -> Any:
    tokens = shlex.split(spec)
    rule = iptc.Rule6() if ipv6 else iptc.Rule()
    current: Any = None
    invert = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            invert, i = True, i + 1
            continue
        neg = "!" if invert else ""
        invert = False
        if tok in _RULE_FIELDS:
            setattr(rule, _RULE_FIELDS[tok], neg + tokens[i + 1])
            i += 2
        elif tok in ("-m", "--match"):
            current, i = rule.create_match(tokens[i + 1]), i + 2
        elif tok in ("-j", "--jump", "-g", "--goto"):
            current = rule.create_target(tokens[i + 1], goto=tok in ("-g", "--goto"))
            i += 2
        elif tok.startswith("--"):
            values, i = _option_values(tokens, i + 1)
            if current is None:
                current = rule.create_match(rule.protocol.lstrip("!"))
            value: str | list[str] = values[0] if len(values) == 1 else values
            if neg:
                value = "!" + value if isinstance(value, str) else ["!", *value]
            current.set_parameter(tok[2:], value)
        else:
            raise ValueError(f"cannot translate {tok!r} in rule: {spec}")
    return rule
