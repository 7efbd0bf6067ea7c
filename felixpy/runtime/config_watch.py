"""FelixConfiguration changes while the agent runs: when the effective parameters change, the
agent restarts itself, as Felix does.

Felix reads most of its configuration once; when a FelixConfiguration it uses changes, it logs
the change and exits so that its supervisor starts it again with the new values. felixpy does the
same in place (``felixpy.agent.run_node``: the graceful shutdown a SIGTERM gets — kernel routes,
chains and veths stay, BGP sessions close without a Cease — then ``exec`` of the same command, so
the PID, and whoever watches it, see no crash). This module is the pure part: it follows the
``FelixConfiguration`` resources as the datastore delivers them and says, once they have settled,
whether the parameters resolved from ``default`` and ``node.<nodename>`` (with the environment's
``FELIX_*`` still winning) differ from the ones the agent runs with. Only a difference of the
effective parameters counts: another node's configuration, a field felixpy does not use, or one
the environment overrides restart nothing. A value the agent cannot use is reported and ignored:
the agent keeps what it runs with rather than exec into a start-up that fails.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from felixpy.calc.updates import FelixConfigUpdate, InvalidConfig, Update
from felixpy.runtime.settings import FelixParams

KIND = "FelixConfiguration"

# Parameters whose change needs no restart: the log level comes from FELIXPY_LOG_LEVEL /
# FELIX_LOGSEVERITYSCREEN only, so a FelixConfiguration logSeverityScreen has no effect here.
NOT_RESTARTING = frozenset({"logSeverityScreen"})
# A route reflector (`felixpy node --route-reflector`) programs no workload dataplane; of the
# parameters it only uses the health and metrics endpoints.
ROUTE_REFLECTOR_FIELDS = frozenset(
    {
        "healthEnabled",
        "healthPort",
        "healthHost",
        "prometheusMetricsEnabled",
        "prometheusMetricsHost",
        "prometheusMetricsPort",
    }
)


@dataclass(frozen=True)
class Check:
    """The outcome of looking at the settled configuration.

    ``updated``: names of the FelixConfiguration resources updated since the previous check.
    ``changes``: {field: (running, wanted)} of the effective parameters that differ (a restart
    is due unless ``error`` or ``repeated`` says otherwise). ``error``: why the configuration
    cannot be used (the running parameters are kept). ``repeated``: the wanted parameters are
    those the previous in-place restart was for, and the agent still came up without them (a
    restart would not help: never restart in a loop)."""

    updated: tuple[str, ...]
    changes: dict[str, tuple[object, object]] = field(default_factory=dict)
    error: str | None = None
    repeated: bool = False
    wanted: FelixParams | None = None

    @property
    def restart(self) -> bool:
        return bool(self.changes) and self.error is None and not self.repeated


def params_digest(params: FelixParams) -> str:
    """A short stable fingerprint of a parameter set (handed across the exec)."""
    text = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def effective_changes(
    running: FelixParams, wanted: FelixParams, fields: Iterable[str] | None = None
) -> dict[str, tuple[object, object]]:
    """{field: (running, wanted)} for the parameters that differ and need a restart to apply."""
    names = set(FelixParams.model_fields) if fields is None else set(fields)
    names -= NOT_RESTARTING
    old, new = running.model_dump(), wanted.model_dump()
    return {k: (old[k], new[k]) for k in FelixParams.model_fields if k in names and old[k] != new[k]}


def invalid_fields(
    env: Mapping[str, str], node: Mapping[str, object] | None, default: Mapping[str, object] | None
) -> dict[str, str]:
    """{field: why} for every parameter the resolver cannot read, each tried alone (so the error
    names the field even when the parser's message does not)."""
    out: dict[str, str] = {}
    for name in FelixParams.model_fields:

        def alone(spec: Mapping[str, object] | None, name: str = name) -> dict[str, object] | None:
            return {name: spec[name]} if spec and name in spec else None

        try:
            FelixParams.resolve(env, alone(node), alone(default))
        except Exception as exc:  # pydantic's ValidationError, a ValueError, a KeyError in a list item
            out[name] = _one_line(exc)
    return out


def _one_line(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            return "; ".join(f"{e.get('msg')} (input {e.get('input')!r})" for e in errors())
        except Exception:  # fall back to str() below
            pass
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


class ConfigWatch:
    def __init__(
        self,
        nodename: str,
        env: Mapping[str, str],
        running: FelixParams,
        *,
        settle_seconds: float = 1.0,
        fields: Iterable[str] | None = None,
        last_target: str | None = None,
    ) -> None:
        """``running``: the parameters the agent started with. ``settle_seconds``: changes are
        acted on once no other FelixConfiguration update came for this long (several edits in a
        row cause one restart). ``fields``: the parameters this agent acts on (default: all).
        ``last_target``: `params_digest` of the parameters the previous in-place restart was for."""
        self.nodename = nodename
        self.env = dict(env)
        self.running = running
        self.settle_seconds = settle_seconds
        self.fields = None if fields is None else frozenset(fields)
        self.last_target = last_target
        self._specs: dict[str, dict[str, object]] = {}
        self._invalid: dict[str, str] = {}  # name -> why the resource itself did not validate
        self._updated: set[str] = set()  # FelixConfiguration names updated since the last check
        self._last_update = 0.0

    def names(self) -> tuple[str, str]:
        return ("default", f"node.{self.nodename}")

    def on_updates(self, updates: Iterable[Update], now: float) -> None:
        """Feed every batch the writer applies (only FelixConfiguration inputs are looked at)."""
        for u in updates:
            if not isinstance(u, FelixConfigUpdate):
                continue
            name = u.name
            self._updated.add(name)
            self._last_update = now
            if name not in self.names():
                continue  # another node's: noted (the check says it was seen), never used
            self._invalid.pop(name, None)
            if u.config is None:
                self._specs.pop(name, None)
            elif isinstance(u.config, InvalidConfig):
                self._invalid[name] = u.config.error
            else:
                self._specs[name] = u.config.spec.model_dump(by_alias=True, exclude_none=True)

    def wanted(self) -> FelixParams:
        """The parameters the delivered resources give (raises if they cannot be read)."""
        default, node = self.names()
        return FelixParams.resolve(self.env, self._specs.get(node), self._specs.get(default))

    def check(self, now: float) -> Check | None:
        """None until a FelixConfiguration update came and no other followed for
        ``settle_seconds``; then what it means (once per settled series of updates)."""
        if not self._updated or now - self._last_update < self.settle_seconds:
            return None
        updated = tuple(sorted(self._updated))
        self._updated.clear()
        if self._invalid:
            why = "; ".join(f"FelixConfiguration {n}: {e}" for n, e in sorted(self._invalid.items()))
            return Check(updated, error=why)
        default, node = self.names()
        try:
            wanted = self.wanted()
        except Exception:
            bad = invalid_fields(self.env, self._specs.get(node), self._specs.get(default))
            why = "; ".join(f"{k}: {v}" for k, v in bad.items()) or "unreadable FelixConfiguration"
            return Check(updated, error=why)
        changes = effective_changes(self.running, wanted, self.fields)
        repeated = (
            bool(changes) and self.last_target is not None and params_digest(wanted) == self.last_target
        )
        return Check(updated, changes, repeated=repeated, wanted=wanted)
