"""Selectors in resources are parsed with the policy package's grammar when the document is read, so a
syntax error is reported with the field, the position and what was expected, before anything is written."""

from __future__ import annotations

import pytest

from felixpy.resources.base import ResourceError
from felixpy.resources.parse import parse_documents

GNP = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: p}}
spec:
  selector: {selector!r}
  ingress:
    - action: Allow
      source: {{selector: {rule!r}}}
"""


@pytest.mark.parametrize(
    ("selector", "rule", "field", "position"),
    [
        ("app == ", "all()", "spec.selector", "position 7"),
        ("has(app", "all()", "spec.selector", "position 7"),
        ("all()", "x in {'a' 'b'}", "spec.ingress[0].source.selector", "position 10"),
        ("all()", "a == 'x' &&", "spec.ingress[0].source.selector", "position 11"),
    ],
)
def test_selector_syntax_error_names_field_and_position(
    selector: str, rule: str, field: str, position: str
) -> None:
    with pytest.raises(ResourceError) as err:
        parse_documents(GNP.format(selector=selector, rule=rule))
    assert err.value.field == field
    assert position in str(err.value) and "expected" in str(err.value)


def test_valid_selectors_pass() -> None:
    (doc,) = parse_documents(GNP.format(selector="app in {'a', 'b'} && !has(x)", rule="role == 'db'"))
    assert doc.spec.selector == "app in {'a', 'b'} && !has(x)"
