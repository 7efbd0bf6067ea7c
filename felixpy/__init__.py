"""felixpy: a Calico-style networking agent for Kubernetes.

gRPC (under the etcd client) logs an INFO line from C++ every time a process with gRPC threads forks,
which the agent does for every `ip`/`iptables-restore` child. Its verbosity is read once, when grpc is
first imported, and every import of grpc in felixpy goes through this package first.
"""

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
