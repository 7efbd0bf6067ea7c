"""`felixpy controllers`: calico-kube-controllers' jobs for felixpy.

Modules by role:
- settings:   KubeControllersConfiguration → the effective settings (defaults, durations in seconds)
- leader:     leader election on a coordination.k8s.io/v1 Lease (pure decision + the Lease client)
- cluster:    reading the Kubernetes view (pods, nodes) — complete or not at all
- gc_plan:    pure: which allocations, endpoints and node holdings are confirmed leaks, and why
- gc_pass:    one garbage-collection pass: read everything, plan, release through ipam/ (CAS)
- sync_plan:  pure: what to write so etcd mirrors the Kubernetes API (etcd mode)
- sync_pass:  the mirror: Namespaces, NetworkPolicies, Pod labels → WorkloadEndpoints, Node labels
- hostendpoints: auto host endpoints `<node>-auto-hep` (hostEndpoint.autoCreate)
- metrics:    the Prometheus counters and health
- runner:     the loop: elect, reload the configuration, run a pass every reconcilerPeriod
"""
