"""The datastore's exception tree (one place, as callers rely on telling these apart).

DatastoreError
├── NotFound            the key/resource does not exist
├── AlreadyExists       create of something present
├── Conflict            compare-and-swap lost: the revision moved on (re-read and retry)
├── Compacted           a watch asked for a revision etcd has compacted away (re-list)
└── Unavailable         transient: the server is unreachable or timed out (retry later)
"""

from __future__ import annotations


class DatastoreError(Exception):
    """Base of every datastore failure."""


class NotFound(DatastoreError):
    pass


class AlreadyExists(DatastoreError):
    pass


class Conflict(DatastoreError):
    """A compare-and-swap write lost the race; the caller re-reads and retries."""


class Compacted(DatastoreError):
    def __init__(self, message: str, *, compact_revision: int = 0):
        super().__init__(message)
        self.compact_revision = compact_revision


class Unavailable(DatastoreError):
    """Retryable: the datastore could not be reached or did not answer in time."""
