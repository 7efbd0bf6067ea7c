"""Name rules: resource names, namespaces, and Kubernetes label keys and values."""

from __future__ import annotations

import re

from felixpy.resources.fields import FieldError

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL_RE = re.compile(rf"^{_DNS_LABEL}$")
_DNS_SUBDOMAIN_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
# Calico's workload endpoint names (`<node>-k8s-<pod>-<iface>`, with '-' in parts doubled)
# are built from node, pod and interface names, which may carry '_' or upper case.
_WEP_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

MAX_SUBDOMAIN = 253
MAX_LABEL = 63


def check_subdomain(name: str, what: str = "name") -> str:
    """A DNS-1123 subdomain: lower-case alphanumerics, '-' and '.', at most 253 characters."""
    if not name:
        raise FieldError(f"{what} must not be empty")
    if len(name) > MAX_SUBDOMAIN:
        raise FieldError(f"{what} '{name[:20]}...' is longer than {MAX_SUBDOMAIN} characters")
    if not _DNS_SUBDOMAIN_RE.match(name):
        raise FieldError(
            f"{what} '{name}' is not a valid DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit)"
        )
    return name


def check_dns_label(name: str, what: str = "name") -> str:
    """A DNS-1123 label (namespace names): like a subdomain part, at most 63 characters, no dots."""
    if not name:
        raise FieldError(f"{what} must not be empty")
    if len(name) > MAX_LABEL or not _DNS_LABEL_RE.match(name):
        raise FieldError(
            f"{what} '{name}' is not a valid DNS-1123 label (at most 63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return name


def check_wep_name(name: str) -> str:
    if not name:
        raise FieldError("name must not be empty")
    if len(name) > MAX_SUBDOMAIN or not _WEP_NAME_RE.match(name):
        raise FieldError(
            f"name '{name}' is not a valid workload endpoint name (letters, digits, '-', '_' and '.', "
            "e.g. 'node1-k8s-nginx-eth0')"
        )
    return name


def check_label_key(key: str) -> str:
    """A Kubernetes label/annotation key: optional DNS-subdomain prefix and '/', then a name of <= 63."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            raise FieldError(f"key '{key}': the prefix before '/' must not be empty")
        check_subdomain(prefix, what=f"key '{key}': prefix")
    if not name:
        raise FieldError(f"key '{key}': the name part must not be empty")
    if len(name) > MAX_LABEL:
        raise FieldError(f"key '{key}': the name part is longer than {MAX_LABEL} characters")
    if not _LABEL_NAME_RE.match(name):
        raise FieldError(
            f"key '{key}': the name part must consist of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return key


def check_label_value(key: str, value: str) -> str:
    if len(value) > MAX_LABEL:
        raise FieldError(f"value of label '{key}' is longer than {MAX_LABEL} characters")
    if value and not _LABEL_NAME_RE.match(value):
        raise FieldError(
            f"value '{value}' of label '{key}' must be empty or consist of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return value


# Label pairs already found valid (a pure check, so its answer can be remembered): a cluster's
# endpoints repeat a few hundred pairs, and the x10 start-up checked 22,000 of them one by one.
# Bounded: cleared when full (only valid pairs are kept; a bad one is checked, and refused, each time).
_VALID_LABELS: set[tuple[str, str]] = set()
VALID_LABELS_MAX = 8192


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Every key and value of a label map, naming the offending key in ``FieldError.field``."""
    valid = _VALID_LABELS
    for pair in labels.items():
        if pair in valid:
            continue
        key, value = pair
        try:
            check_label_key(key)
            check_label_value(key, value)
        except FieldError as exc:
            raise FieldError(exc.reason, field=key) from None
        if len(valid) >= VALID_LABELS_MAX:
            valid.clear()
        valid.add(pair)
    return labels


def check_annotation_keys(annotations: dict[str, str]) -> dict[str, str]:
    for key in annotations:
        try:
            check_label_key(key)
        except FieldError as exc:
            raise FieldError(exc.reason, field=key) from None
    return annotations


def escape(part: str) -> str:
    return part.replace("-", "--")


def wep_name(node: str, orchestrator: str, workload: str, endpoint: str) -> str:
    """Calico's `<node>-<orch>-<pod or containerID>-<endpoint>`, '-' doubled inside each part."""
    return "-".join(escape(p) for p in (node, orchestrator, workload, endpoint))
