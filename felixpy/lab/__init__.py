"""felixpy-lab: a datacenter's shape out of network namespaces, running the real felixpy agents.

Modules: ``plan`` (pure topology), ``topology`` (namespaces, links), ``etcd``, ``bird``,
``agents``, ``up``/``down``, ``pods`` (CNI), ``probe``/``prober``/``responder``, ``status``,
``demo``, ``testing`` (helpers for e2e tests), ``main`` (the CLI).
"""
