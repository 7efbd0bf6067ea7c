"""FelixConfiguration changes while the agent runs: when the effective parameters change, the
agent restarts itself, as Felix does.

Felix reads most of its configuration once; when a FelixConfiguration it uses changes, it logs
the change and exits so that its supervisor starts it again with the new values. felixpy does the
same in place (``felixpy.agent.run_node``: the graceful shutdown a SIGTERM gets — kernel routes,
chains and veths stay, BGP sessions close without a Cease — then ``exec`` of the same command, so
the PID, and whoever watches it, see no crash). This module is the pure part: it follows the
``default`` and ``node.<nodename>`` resources as the datastore delivers them and says when the
parameters resolved from them (with the environment's ``FELIX_*`` still winning) differ from the
ones the agent runs with. Only a difference of the effective parameters counts: another node's
configuration, a field felixpy does not use, or one the environment overrides restart nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from felixpy.calc.model import InputUpdate, Update
from felixpy.node.settings import FelixParams

KIND = "FelixConfiguration"


class ConfigWatch:
    def __init__(
        self,
        nodename: str,
        env: Mapping[str, str],
        running: FelixParams,
        *,
        settle_seconds: float = 1.0,
    ) -> None:
        """``running``: the parameters the agent started with. ``settle_seconds``: changes are
        acted on once no other FelixConfiguration update came for this long (several edits in a
        row cause one restart)."""
        self.nodename = nodename
        self.env = dict(env)
        self.running = running
        self.settle_seconds = settle_seconds
        self.error: str | None = None  # why the current configuration cannot be used, if so
        self._specs: dict[str, dict[str, Any]] = {}
        self._seen = False  # a FelixConfiguration update arrived since the last check
        self._last_update = 0.0

    def names(self) -> tuple[str, str]:
        return ("default", f"node.{self.nodename}")

    def on_updates(self, updates: Iterable[Update], now: float) -> None:
        """Feed every batch the writer applies (only FelixConfiguration inputs are looked at)."""
        for u in updates:
            if not isinstance(u, InputUpdate) or u.kind != KIND or u.key[1] not in self.names():
                continue
            name = u.key[1]
            if u.obj is None:
                self._specs.pop(name, None)
            else:
                spec: Any = getattr(u.obj, "spec", None)
                self._specs[name] = spec.model_dump(by_alias=True, exclude_none=True) if spec else {}
            self._seen = True
            self._last_update = now

    def wanted(self) -> FelixParams:
        """The parameters the delivered resources give (ValidationError if they are invalid)."""
        default, node = self.names()
        return FelixParams.resolve(self.env, self._specs.get(node), self._specs.get(default))

    def changes(self, now: float) -> dict[str, tuple[Any, Any]] | None:
        """{field: (running, wanted)} once the configuration has settled and differs; else None.
        An invalid configuration is reported in ``error`` and changes nothing."""
        if not self._seen or now - self._last_update < self.settle_seconds:
            return None
        self._seen = False
        try:
            wanted = self.wanted()
        except ValidationError as exc:
            self.error = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            return None
        except ValueError as exc:  # a duration or port list the resolver could not read
            self.error = str(exc)
            return None
        self.error = None
        old, new = self.running.model_dump(), wanted.model_dump()
        diff = {k: (old[k], new[k]) for k in new if old.get(k) != new[k]}
        return diff or None
