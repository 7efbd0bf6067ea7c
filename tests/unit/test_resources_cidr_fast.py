"""felixpy.resources.fields.check_cidr takes a canonical IPv4 /32 as written (no ipaddress parse):
the same answer, or the same refusal, as the full parse for every spelling around that form."""

from __future__ import annotations

import ipaddress
import random

import pytest

from felixpy.resources.fields import FieldError, check_cidr


def slow(text: str) -> str:
    net = ipaddress.ip_network(text.strip(), strict=False)
    if net.network_address != ipaddress.ip_interface(text.strip()).ip:
        raise ValueError("host bits")
    return str(net)


def test_fast_path_agrees_with_the_full_parse() -> None:
    rng = random.Random(5)
    octets = ["0", "1", "9", "10", "99", "100", "199", "200", "249", "250", "255", "256", "300", "01", "1a"]
    lengths = ("32", "31", "24", "032", "")

    def spelling() -> str:
        address = ".".join(rng.choice(octets) for _ in range(rng.choice((3, 4, 5))))
        return f"{address}/{rng.choice(lengths)}"

    samples = [spelling() for _ in range(3000)]
    samples += [" 10.0.0.1/32 ", "10.0.0.1/32\n", "10.0.0.1/32 x", "\u0661\u0660.0.0.1/32"]
    for text in samples:
        try:
            want: str | None = slow(text)
        except ValueError:
            want = None
        if want is None:
            with pytest.raises(FieldError):
                check_cidr(text)
        else:
            assert check_cidr(text) == want, text
