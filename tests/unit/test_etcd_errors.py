"""Which gRPC failures mean "try another member" (pure)."""

from __future__ import annotations

import grpc
import pytest

from felixpy.datastore.errors import DatastoreError, Unavailable
from felixpy.datastore.etcd import _not_sent, map_rpc_error


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.UNKNOWN, "No status received"),  # the member died mid-call
        (grpc.StatusCode.UNKNOWN, "Stream removed (Data frame with END_STREAM flag received)"),
        (
            grpc.StatusCode.UNAVAILABLE,
            "etcdserver: request timed out, possibly due to previous leader failure",
        ),
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"),
    ],
)
def test_transport_and_leader_failures_are_transient(code: grpc.StatusCode, details: str) -> None:
    assert isinstance(map_rpc_error(code, details), Unavailable)


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large"),
        (grpc.StatusCode.UNKNOWN, "etcdserver: duplicate key given in txn request"),
        (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"),
    ],
)
def test_etcds_own_refusals_are_permanent(code: grpc.StatusCode, details: str) -> None:
    err = map_rpc_error(code, details)
    assert isinstance(err, DatastoreError) and not isinstance(err, Unavailable)


def test_only_failures_before_the_log_count_as_not_sent() -> None:
    assert _not_sent("failed to connect to all addresses; last error: Connection refused")
    assert _not_sent("etcdserver: no leader")
    assert not _not_sent("Deadline Exceeded")  # the write may have reached the leader
    assert not _not_sent("etcdserver: request timed out")


def test_a_raw_transactions_effects_are_read_off_its_success_branch() -> None:
    from pyetcd import etcdrpc

    from felixpy.datastore.etcd import _cmp_mod, _cmp_version, _effects_of_request, _op_delete, _op_put
    from felixpy.datastore.etcd_outcome import Effect

    compare = [_cmp_mod("/a", 7), _cmp_version("/b", 0)]
    success = [_op_put("/a", b"A"), _op_put("/b", b"B"), _op_delete("/c")]
    assert _effects_of_request(compare, success) == [
        Effect("/a", b"A", 7),
        Effect("/b", b"B"),
        Effect("/c", None),
    ]
    ranged = etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=b"/p/", range_end=b"/p0"))
    assert _effects_of_request([], [ranged]) == []  # a range delete has no single-key effect
