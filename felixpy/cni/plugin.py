"""felixpy-cni: the CNI plugin binary (type "felixpy"). Standard library only, on purpose.

The container runtime runs this once per ADD/DEL/CHECK/VERSION. Importing pyroute2 and an
etcd client would cost ~0.5 s per call, so the plugin does no work itself: it validates
the CNI environment, forwards the request as one JSON line over the warm agent's unix
socket and prints the agent's answer. When the agent is not there it fails at once with
CNI error code 11 ("try again later") naming the socket, so the runtime retries.

Start-up is most of what this program costs (the agent's ADD is ~15-30 ms), so it is kept lean:
``felixpy install-cni`` writes a launcher that runs it as ``python3 -I -S`` (no ``site``, no
editable-install finder, no user paths) and loads this file alone (not the ``felixpy`` package,
whose ``__init__`` imports ``os``). On the happy path it imports only built-in and C modules:
``posix`` instead of ``os`` (~1 ms), ``_socket`` instead of ``socket`` and ``_json``'s
scanner/quoter instead of ``json`` (``json`` pulls in ``re`` and ``enum``, ``socket`` builds its
enums: ~12 ms together); and it leaves with ``posix._exit`` once its answer is flushed, skipping
the interpreter's teardown (~1 ms). An interpreter without ``_json`` falls back to ``json``.
Error paths may import what they like.

Socket: config ``agent_socket``, else ``<run_dir>/cni.sock`` (config ``run_dir``, else
env FELIXPY_RUN_DIR, else /var/run/felixpy).

Wire format: one request line, one answer line::

    -> {"command", "containerID", "netns", "ifname", "args", "path", "config", "reply": "cni"}
    <- "<exit code> <the JSON to print>"   ("0" alone for nothing; the agent formats CNI errors)

Without ``"reply": "cni"`` the agent answers ``{"result": {...}} | {"error": {"code", "msg",
"details"}}`` (the first version of this protocol), which :func:`decode_answer` also reads.
"""

from __future__ import annotations

import _socket
import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]
DEFAULT_RUN_DIR = "/var/run/felixpy"
MAX_ANSWER = 1 << 20
# CNI spec error codes.
ERR_INCOMPATIBLE_VERSION = 1
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11


class _ScanContext:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``: plain JSON, strict strings."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not JSON")


def _c_codec() -> tuple[Callable[[str, int], tuple[Any, int]], Callable[[str], str]] | None:
    """``_json``'s scanner and string quoter, or None when this interpreter has no C accelerator."""
    try:
        import _json
    except ImportError:
        return None
    return _json.make_scanner(_ScanContext()), _json.encode_basestring_ascii  # type: ignore[arg-type]


_C_CODEC = _c_codec()


def loads(text: str) -> Any:
    """JSON text -> object (with the C scanner: no ``json``/``re`` import)."""
    if _C_CODEC is None:
        import json

        return json.loads(text)
    text = text.strip()
    try:
        obj, end = _C_CODEC[0](text, 0)
    except StopIteration as exc:
        raise ValueError(f"expecting a JSON value at offset {exc.value}") from None
    except ValueError:
        raise
    except Exception:  # _json reports some errors through json.decoder, absent under -S: json words them
        import json

        json.loads(text)
        raise ValueError("invalid JSON") from None
    if end != len(text):
        raise ValueError(f"extra data at offset {end}")
    return obj


def quote(s: str) -> str:
    """A JSON string literal (ASCII-only, like ``json.dumps``)."""
    if _C_CODEC is None:
        import json

        return json.dumps(s)
    return _C_CODEC[1](s)


def dumps(obj: Any) -> str:
    """JSON for what the plugin prints itself (VERSION, its own errors): str/int/list/dict only."""
    if isinstance(obj, str):
        return quote(obj)
    if isinstance(obj, bool) or obj is None:
        return {True: "true", False: "false", None: "null"}[obj]
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, list):
        return "[" + ", ".join(dumps(v) for v in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{quote(str(k))}: {dumps(v)}" for k, v in obj.items()) + "}"
    raise TypeError(f"cannot encode {type(obj).__name__}")


class CNIError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        return {"cniVersion": cni_version, "code": self.code, "msg": self.msg, "details": self.details}


def socket_path(config: dict[str, Any], environ: dict[str, str]) -> str:
    if config.get("agent_socket"):
        return str(config["agent_socket"])
    run_dir = config.get("run_dir") or environ.get("FELIXPY_RUN_DIR") or DEFAULT_RUN_DIR
    run_dir = str(run_dir)
    return f"{run_dir}cni.sock" if run_dir.endswith("/") or not run_dir else f"{run_dir}/cni.sock"


def parse_config(stdin: str) -> dict[str, Any]:
    try:
        config = loads(stdin or "{}")
    except ValueError as exc:
        raise CNIError(ERR_DECODE, "network configuration is not valid JSON", str(exc)) from exc
    if not isinstance(config, dict):
        raise CNIError(ERR_INVALID_CONFIG, "network configuration must be a JSON object")
    return config


def build_request(command: str, config: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    required = ["CNI_CONTAINERID", "CNI_IFNAME"] + (["CNI_NETNS"] if command in ("ADD", "CHECK") else [])
    missing = [name for name in required if not environ.get(name)]
    if missing:
        raise CNIError(ERR_INVALID_ENV, "missing CNI environment variables", ", ".join(missing))
    version = str(config.get("cniVersion", ""))
    if version not in SUPPORTED_VERSIONS:
        raise CNIError(
            ERR_INCOMPATIBLE_VERSION,
            f"unsupported cniVersion {version!r}",
            "supported: " + ", ".join(SUPPORTED_VERSIONS),
        )
    return {
        "command": command,
        "containerID": environ["CNI_CONTAINERID"],
        "netns": environ.get("CNI_NETNS", ""),
        "ifname": environ["CNI_IFNAME"],
        "args": environ.get("CNI_ARGS", ""),
        "path": environ.get("CNI_PATH", ""),
        "reply": "cni",
    }


def encode_request(request: dict[str, Any], config_text: str) -> bytes:
    """One line: the request's strings, and the configuration exactly as the runtime sent it.

    A valid JSON text has no raw line breaks inside strings, so turning them into spaces keeps
    the configuration identical and the request on one line.
    """
    fields = [f"{quote(k)}: {quote(v)}" for k, v in request.items()]
    config = (config_text.strip() or "{}").replace("\r", " ").replace("\n", " ")
    return ("{" + ", ".join(fields) + f', "config": {config}}}\n').encode()


def call_agent(path: str, payload: bytes, timeout: float) -> bytes:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise CNIError(ERR_TRY_AGAIN, f"felixpy agent is not running (socket {path})", str(exc)) from exc
        sock.sendall(payload)
        chunks = []
        size = 0
        while size < MAX_ANSWER:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
            size += len(data)
    except TimeoutError as exc:
        raise CNIError(
            ERR_TRY_AGAIN, f"felixpy agent did not answer in {timeout:g}s (socket {path})"
        ) from exc
    except OSError as exc:
        raise CNIError(ERR_IO, f"talking to the felixpy agent at {path} failed", str(exc)) from exc
    finally:
        sock.close()
    return b"".join(chunks)


def decode_answer(answer: bytes, version: str, path: str) -> tuple[int, str]:
    """(exit code, JSON text to print) from either answer format."""
    text = answer.decode(errors="replace").strip()
    head, _, rest = text.partition(" ")
    if head in ("0", "1"):  # "0" alone: success with nothing to print (DEL, CHECK)
        return int(head), rest
    try:
        doc = loads(text)
        if not isinstance(doc, dict):
            raise ValueError("answer is not an object")
    except ValueError as exc:
        raise CNIError(ERR_IO, f"bad answer from the felixpy agent at {path}", str(exc)) from exc
    if "error" in doc:
        err = doc["error"]
        fields = (err.get("code", 999), err.get("msg", ""), err.get("details", ""))
        return 1, dumps(dict(zip(("cniVersion", "code", "msg", "details"), (version, *fields), strict=True)))
    result = doc.get("result")
    return 0, "" if result is None else dumps(result)


def invoke(environ: dict[str, str], stdin: str) -> tuple[int, str]:
    """One invocation: (exit code, JSON text to print, "" for nothing)."""
    command = environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        return 0, dumps({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED_VERSIONS})
    version = "1.0.0"
    try:
        config = parse_config(stdin)
        version = str(config.get("cniVersion") or version)
        if command not in ("ADD", "DEL", "CHECK"):
            raise CNIError(ERR_INVALID_ENV, f"unknown CNI_COMMAND {command!r}")
        payload = encode_request(build_request(command, config, environ), stdin)
        path = socket_path(config, environ)
        answer = call_agent(path, payload, float(config.get("timeout_seconds", 120)))
        return decode_answer(answer, version, path)
    except CNIError as exc:
        return 1, dumps(exc.to_json(version if version in SUPPORTED_VERSIONS else "1.0.0"))


def run(environ: dict[str, str], stdin: str) -> tuple[int, dict[str, Any] | None]:
    """Like :func:`invoke`, with the printed JSON decoded (for callers that want the object)."""
    code, text = invoke(environ, stdin)
    return code, (loads(text) if text else None)


def environ() -> dict[str, str]:
    """The process environment as ``os.environ`` decodes it, without importing ``os``."""
    return {
        k.decode(errors="surrogateescape"): v.decode(errors="surrogateescape")
        for k, v in posix.environ.items()
    }


def main() -> None:
    env = environ()
    stdin = "" if env.get("CNI_COMMAND") == "VERSION" else sys.stdin.read()
    code, out = invoke(env, stdin)
    if out:
        sys.stdout.write(out + "\n")
    sys.stdout.flush()  # then leave without the interpreter's teardown: nothing else is pending
    posix._exit(code)


if __name__ == "__main__":
    main()
