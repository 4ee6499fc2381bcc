"""The daemon's configuration: one validated model, ``MarmotConfig``.

:func:`load_config` reads it from a YAML file, then ``MARMOT_*`` environment
variables, then overrides (command-line flags), each layer winning over the one
before. Every key, its default and its variable are documented in
``configs/marmot.yaml``. The environment is read only by :func:`load_config`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from marmot.engine.errors import ValidationFailed
from marmot.engine.models.events import EventLimits

__all__ = [
    "CLIENT_ENV_NAMES",
    "DEFAULT_INGEST_URL",
    "DEFAULT_RPC_URL",
    "ENV_PREFIX",
    "DataConfig",
    "ExecutorsConfig",
    "HttpConfig",
    "IngestConfig",
    "LimitsConfig",
    "MarmotConfig",
    "OrchestratorConfig",
    "PrefectConfig",
    "RayConfig",
    "RouterConfig",
    "RpcConfig",
    "environment_names",
    "load_config",
]

log = logging.getLogger(__name__)

ENV_PREFIX = "MARMOT_"
DEFAULT_INGEST_URL = "tcp://127.0.0.1:7600"
DEFAULT_RPC_URL = "tcp://127.0.0.1:7601"
DEFAULT_HTTP_PORT = 7602

# Variables the clients read (DESIGN "Interfaces users rely on"). MARMOT_RPC_URL is
# also the daemon's ``rpc.url``; MARMOT_INGEST_URL means nothing to the daemon;
# MARMOT_TOKEN stands in for ``rpc.token`` when that is not set.
CLIENT_ENV_NAMES = frozenset(
    {"MARMOT_CONFIG", "MARMOT_RPC_URL", "MARMOT_INGEST_URL", "MARMOT_TOKEN"}
)

_ZMQ_SCHEMES = ("tcp", "ipc", "inproc")
_SECRET = "***"


# -- value checks ------------------------------------------------------------------


def _is_port(text: str) -> bool:
    return text.isdigit() and 1 <= int(text) <= 65535


def _check_zmq_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _ZMQ_SCHEMES:
        raise PydanticCustomError(
            "zmq_url",
            "must be a ZeroMQ URL starting with tcp://, ipc:// or inproc://, got '{url}'",
            {"url": url},
        )
    if not rest:
        raise PydanticCustomError("zmq_url", "'{url}' names no address", {"url": url})
    if scheme == "tcp":
        host, _, port = rest.rpartition(":")
        # "*" is ZeroMQ's "any free port"; the bound endpoint reports the real one.
        if not host or not (port == "*" or _is_port(port)):
            raise PydanticCustomError(
                "zmq_url",
                "'{url}' must be tcp://HOST:PORT with PORT in 1..65535 (or *)",
                {"url": url},
            )
    return url


def _check_ray_address(address: str | None) -> str | None:
    # "local" is what ray.init() calls an embedded instance; null means the same here.
    if address is None or address in ("", "local"):
        return None
    if address == "auto":
        return address
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not _is_port(port):
        raise PydanticCustomError(
            "ray_address",
            "must be null (embedded Ray), 'auto', 'ray://HOST:PORT' or 'HOST:PORT', "
            "got '{address}'",
            {"address": address},
        )
    return address


def _check_http_url(url: str | None) -> str | None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise PydanticCustomError(
            "http_url", "must start with http:// or https://, got '{url}'", {"url": url}
        )
    return url


def _check_log_level(level: str) -> str:
    name = level.upper()
    if name not in logging.getLevelNamesMapping():
        raise PydanticCustomError(
            "log_level",
            "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got '{level}'",
            {"level": level},
        )
    return name


def _check_secret(secret: SecretStr | None) -> SecretStr | None:
    if secret is not None and not secret.get_secret_value():
        raise PydanticCustomError("empty_secret", "must not be empty (leave it unset instead)")
    return secret


def _is_loopback(url: str) -> bool:
    """Whether a bind URL is reachable only from this machine."""
    scheme, _, rest = url.partition("://")
    if scheme != "tcp":
        return True  # ipc:// and inproc:// never leave the machine
    host = rest.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: assume it is reachable


def _bind_host(url: str) -> str:
    return url.partition("://")[2].rpartition(":")[0]


ZmqUrl = Annotated[str, AfterValidator(_check_zmq_url)]
RayAddress = Annotated[str | None, AfterValidator(_check_ray_address)]
HttpUrl = Annotated[str | None, AfterValidator(_check_http_url)]
LogLevel = Annotated[str, AfterValidator(_check_log_level)]
Secret = Annotated[SecretStr | None, AfterValidator(_check_secret)]


# -- the model ---------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where the daemon keeps its SQLite store, event log and checkpoints."""

    dir: Path = Field(default=Path(".marmot-data"), validate_default=True)
    event_retention_days: float = Field(default=7.0, gt=0)
    checkpoint_interval_s: float = Field(default=5.0, gt=0)

    @field_validator("dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # Resolved once, against the working directory at load time: Ray workers run
        # elsewhere, so every process must see the same absolute path.
        return Path(os.path.abspath(path.expanduser()))


class RayConfig(_Section):
    """Which Ray to run on: an embedded local instance, or a cluster to join."""

    address: RayAddress = None
    namespace: str = Field(default="marmot", min_length=1)
    num_cpus: int | None = Field(default=None, ge=1)
    # Ray refuses an object store under 75 MB.
    object_store_memory_mb: int = Field(default=200, ge=75)
    log_to_driver: bool = False


class IngestConfig(_Section):
    """The ZeroMQ sockets events arrive on."""

    pull_url: ZmqUrl = DEFAULT_INGEST_URL
    sub_urls: list[ZmqUrl] = Field(default_factory=list)
    sub_topic: str = ""
    max_frame_bytes: int = Field(default=1_048_576, ge=1)
    high_water_mark: int = Field(default=10_000, ge=0)  # 0: ZeroMQ's "no limit"


class RpcConfig(_Section):
    """The ZeroMQ request/reply socket clients and the CLI talk to."""

    url: ZmqUrl = DEFAULT_RPC_URL
    token: Secret = None
    # Replies by bytes: one reply, one events.filter page, and the replies a
    # connection has not read yet (see transport/rpc.py).
    max_reply_bytes: int = Field(default=16 * 1024 * 1024, ge=65_536)
    page_bytes: int = Field(default=4 * 1024 * 1024, ge=65_536)
    max_unread_bytes: int = Field(default=64 * 1024 * 1024, ge=65_536)


class CurveConfig(_Section):
    """ZeroMQ CURVE for the RPC and ingest sockets: encryption and client keys."""

    secret_key_file: Path | None = None
    clients_dir: Path | None = None

    @field_validator("secret_key_file", "clients_dir")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return None if path is None else Path(os.path.abspath(path.expanduser()))


class HttpConfig(_Section):
    """The HTTP server: incoming webhooks, /healthz and /metrics."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=DEFAULT_HTTP_PORT, ge=1, le=65535)
    # Webhooks: the largest request body read, and the URL other systems reach
    # this server by (behind a proxy), for the webhook URLs shown to users.
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    public_url: HttpUrl = None
    # Slow or idle clients: a request's headers must arrive within
    # header_timeout_s (of connecting, or of the previous response), a webhook's
    # body within body_timeout_s; at most max_connections are open at once
    # (fewer if the descriptor limit asks for it).
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)
    # The web console under /ui/; bound beyond loopback it asks for a login with
    # console_token (rpc.token when not set), and is off when neither is set.
    console: bool = True
    console_token: Secret = None


class RouterConfig(_Section):
    """How events are batched into calls on automation actors."""

    # Large: a Ray call costs the daemon and the actor ~1 ms whatever it carries,
    # and batches only reach this size when an actor is behind (bench/fleet.py:
    # 256 -> 4096 took 10,000 automations from ~5,900 to ~12,100 events/s).
    batch_max_events: int = Field(default=4096, ge=1)
    max_inflight_per_actor: int = Field(default=2, ge=1)
    # Events accepted and not yet routed; beyond it, publishers wait (backpressure).
    max_queued_events: int = Field(default=100_000, ge=1)
    # How far the events clock may trail the wall clock (Marmot's bound on
    # SEMANTICS §6; null: Prefect's rule alone, no bound).
    events_clock_max_lag_s: float | None = Field(default=120.0, gt=0)
    # Followers held back waiting for their leader; past it, the ones delivered
    # longest ago are evaluated as lost (SEMANTICS §6).
    max_held_followers: int = Field(default=100_000, ge=1)


class ExecutorsConfig(_Section):
    """The pool of actors that carry out actions."""

    pool_size: int = Field(default=2, ge=1)
    action_timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    max_concurrent_actions: int = Field(default=64, ge=1)
    nice: int = Field(default=10, ge=0, le=19)


class LimitsConfig(_Section):
    """Upper bounds on one incoming event."""

    max_labels: int = Field(default=500, ge=1)
    max_related: int = Field(default=500, ge=1)
    max_payload_bytes: int = Field(default=262_144, ge=1)
    template_max_bytes: int = Field(default=65_536, ge=1)
    template_timeout_s: float = Field(default=2.0, gt=0)
    # Open buckets (for_each keys) one event trigger keeps; a new key past it
    # evicts the key opened earliest. null: no cap (as Prefect).
    max_buckets_per_trigger: int | None = Field(default=100_000, ge=1)
    # An automation with more firings caused by automation events than this
    # within loop_window_s fires on its own events: the daemon pauses it.
    loop_firings: int = Field(default=100, ge=1)
    loop_window_s: float = Field(default=10.0, gt=0)

    def event_limits(self) -> EventLimits:
        """The bounds every accepted event is validated against."""
        return EventLimits(
            max_labels=self.max_labels,
            max_related=self.max_related,
            max_payload_bytes=self.max_payload_bytes,
        )


class OrchestratorConfig(_Section):
    """The Prefect-compatible API that flow-run and deployment actions call."""

    api_url: HttpUrl = None
    api_key: Secret = None
    # A self-hosted server's PREFECT_SERVER_API_AUTH_STRING ("user:password"),
    # sent as HTTP basic auth (as Prefect's client's PREFECT_API_AUTH_STRING).
    auth_string: Secret = None
    ui_url: HttpUrl = None


class PrefectConfig(_Section):
    """The event bridge from a Prefect server (OSS or Cloud): where, how to log in,
    which events, and how it resumes and reconnects (transport/prefect_bridge.py)."""

    # The server's API (http://127.0.0.1:4200/api, or a Cloud workspace's URL);
    # null: no bridge.
    api_url: HttpUrl = None
    # Prefect Cloud's API key (a bearer token and the socket's auth token).
    api_key: Secret = None
    # A self-hosted server's PREFECT_SERVER_API_AUTH_STRING ("user:password"):
    # HTTP basic auth and the socket's auth token.
    auth_string: Secret = None
    # Prefect's EventFilter as JSON (its ``occurred`` is set by the bridge);
    # null: every event.
    filter: dict[str, Any] | None = None
    # Send Marmot's automation.* and action.* events to the server (POST /events).
    write_back: bool = True
    # Keep importing the server's enabled automations (and pausing them there)
    # every sync_interval_s and when a prefect.deployment.* event comes.
    sync_automations: bool = False
    sync_interval_s: float = Field(default=120.0, gt=0)
    # On every (re)connect, events since the newest ``occurred`` received minus
    # this are asked for again (late arrivals); ids already logged are dropped.
    overlap_s: float = Field(default=60.0, ge=0)
    # How far back the server's socket backfills (its
    # PREFECT_SERVER_EVENTS_MAXIMUM_WEBSOCKET_BACKFILL, 15 minutes); a longer
    # gap is first paged from POST /events/filter.
    socket_backfill_s: float = Field(default=900.0, gt=0)
    # The largest socket message taken; uvicorn's (the server's) is 16 MiB.
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=2_000_000)
    # Payload bound of bridged events: Prefect's whole-event bound
    # (PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES), above limits.max_payload_bytes.
    max_event_bytes: int = Field(default=1_500_000, ge=1)
    # Every this many seconds the bridge pages what the server stored since the last
    # time (POST /events/filter, 10 s behind the live edge) for events its socket
    # missed (Prefect's stream drops events for a subscriber 256 behind, as when
    # one POST /events carries more than 256); null: only once, 10 s after each
    # (re)connect. Costs about one more read of the stream.
    reconcile_interval_s: float | None = Field(default=60.0, gt=0)
    # Reconnects wait a random time up to min(max, min * 2**attempt), forever.
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    # Time-out of one connect, auth or REST page.
    timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("filter", mode="before")
    @classmethod
    def _filter_from_text(cls, value: Any) -> Any:
        # MARMOT_PREFECT_FILTER holds the filter as JSON text.
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else None
            except json.JSONDecodeError as exc:
                raise PydanticCustomError(
                    "json_invalid", "not a JSON EventFilter: {error}", {"error": str(exc)}
                ) from None
        return value


class MarmotConfig(BaseModel):
    """Everything the daemon is configured with; loaded once, then passed down."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: DataConfig = Field(default_factory=DataConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    rpc: RpcConfig = Field(default_factory=RpcConfig)
    curve: CurveConfig = Field(default_factory=CurveConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    executors: ExecutorsConfig = Field(default_factory=ExecutorsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    orchestrator: OrchestratorConfig = Field(default_factory=OrchestratorConfig)
    prefect: PrefectConfig = Field(default_factory=PrefectConfig)
    # "auto": one actor per automation while the node holds them, packed into
    # shared actors beyond (actors/packing.py); a number: that many to an actor.
    automations_per_actor: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    # Most automation actors; None: as many as the node holds (marmot status).
    max_automation_actors: int | None = Field(default=None, ge=1)
    max_automations: int = Field(default=20_000, ge=1)
    resolved_states: bool = False
    log_level: LogLevel = "INFO"

    @model_validator(mode="after")
    def _orchestrate_where_events_come_from(self) -> Self:
        # With a bridge and no orchestrator, actions act on the server the events
        # came from (with its API key).
        bridge = self.prefect
        if bridge.api_url is not None and self.orchestrator.api_url is None:
            orchestrator = self.orchestrator.model_copy(
                update={
                    "api_url": bridge.api_url,
                    "api_key": self.orchestrator.api_key or bridge.api_key,
                    "auth_string": self.orchestrator.auth_string or bridge.auth_string,
                }
            )
            object.__setattr__(self, "orchestrator", orchestrator)
        return self

    @model_validator(mode="after")
    def _refuse_open_bind_without_token(self) -> Self:
        if self.curve.secret_key_file is not None and self.curve.clients_dir is not None:
            return self  # only clients holding listed keys get in
        if self.rpc.token is None and not _is_loopback(self.rpc.url):
            raise PydanticCustomError(
                "insecure_bind",
                "refusing to bind RPC to {host} without rpc.token: {key} = {url} "
                "accepts connections from other machines; set rpc.token "
                "(MARMOT_RPC_TOKEN or MARMOT_TOKEN), or curve.secret_key_file with "
                "curve.clients_dir, or bind to 127.0.0.1",
                {"host": _bind_host(self.rpc.url), "key": "rpc.url", "url": self.rpc.url},
            )
        # rpc.token guards RPC requests only: a frame pushed to ingest carries no
        # token, so only CURVE client keys can tell who may publish.
        if not _is_loopback(self.ingest.pull_url):
            raise PydanticCustomError(
                "insecure_bind",
                "refusing to bind ingest to {host} without CURVE client keys: {key} = {url} "
                "takes events from any machine that reaches it (rpc.token does not guard "
                "ingest); set curve.secret_key_file and curve.clients_dir, or bind to 127.0.0.1",
                {
                    "host": _bind_host(self.ingest.pull_url),
                    "key": "ingest.pull_url",
                    "url": self.ingest.pull_url,
                },
            )
        return self

    def redacted(self) -> dict[str, Any]:
        """The configuration as JSON-safe data, with every set secret shown as ``***``."""
        dump = self.model_dump(mode="json")
        for path, _ in _leaves():
            section = dump if len(path) == 1 else dump[path[0]]
            if isinstance(_value_at(self, path), SecretStr):
                section[path[-1]] = _SECRET
        return dump


# -- loading -----------------------------------------------------------------------


def _leaves() -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    """Every configuration key as its path (``("rpc", "url")``) and field."""
    for name, info in MarmotConfig.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for key, leaf in section.model_fields.items():
                yield (name, key), leaf
        else:
            yield (name,), info


def _sections() -> frozenset[str]:
    return frozenset(path[0] for path, _ in _leaves() if len(path) == 2)


def _value_at(config: MarmotConfig, path: tuple[str, ...]) -> Any:
    value: Any = config
    for part in path:
        value = getattr(value, part)
    return value


def _env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "_".join(path).upper()


def environment_names() -> dict[str, str]:
    """Every configuration variable mapped to its key: ``{"MARMOT_RPC_URL": "rpc.url"}``."""
    return {_env_name(path): ".".join(path) for path, _ in _leaves()}


def _is_secret(path: tuple[str, ...]) -> bool:
    """Whether the key at ``path`` is, or (a section, the root) holds, a secret."""
    return any(
        SecretStr in (info.annotation, *get_args(info.annotation))
        for leaf, info in _leaves()
        if leaf[: len(path)] == path
    )


def _from_env(name: str, text: str, info: FieldInfo) -> Any:
    """Turn one variable's text into what pydantic should validate for its field."""
    if get_origin(info.annotation) is list:
        if text.lstrip().startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValidationFailed(
                    f"environment variable {name}: not a JSON list: {exc}",
                    details=[{"loc": [name], "msg": str(exc), "type": "json_invalid"}],
                ) from exc
        return [item.strip() for item in text.split(",") if item.strip()]
    if not text.strip() and type(None) in get_args(info.annotation):
        return None  # an empty variable unsets an optional key
    return text


class _Layers:
    """The merged raw configuration, remembering which source set each key."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.sources: dict[tuple[str, ...], str] = {}

    def put(self, path: tuple[str, ...], value: Any, source: str) -> None:
        """Set ``value`` at ``path``; a mapping merges key by key into what is there."""
        if isinstance(value, Mapping):
            if path:
                self._node(path)
                self.sources[path] = source
            for key, child in value.items():
                self.put((*path, str(key)), child, source)
            return
        self._node(path[:-1])[path[-1]] = value
        self.sources[path] = source

    def get(self, path: tuple[str, ...]) -> Any:
        node: Any = self.tree
        for part in path:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    def source_of(self, path: tuple[str, ...]) -> str:
        for end in range(len(path), 0, -1):
            if path[:end] in self.sources:
                return self.sources[path[:end]]
        return "defaults"

    def _node(self, path: tuple[str, ...]) -> dict[str, Any]:
        node = self.tree
        for part in path:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        return node


def _read_file(path: Path, label: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationFailed(f"cannot read config file {label}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationFailed(f"config file {label} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValidationFailed(
            f"config file {label} must be a mapping of sections, not {type(data).__name__}"
        )
    sections = _sections()
    # A section whose keys are all commented out reads as null: treat it as empty.
    return {key: {} if value is None and key in sections else value for key, value in data.items()}


def _read_env(layers: _Layers, environ: Mapping[str, str]) -> None:
    fields = {_env_name(path): (path, info) for path, info in _leaves()}
    sections = tuple(f"{ENV_PREFIX}{section.upper()}_" for section in _sections())
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        if name in fields:
            path, info = fields[name]
            layers.put(path, _from_env(name, environ[name], info), f"environment variable {name}")
        elif name not in CLIENT_ENV_NAMES and name.startswith(sections):
            log.warning("ignoring %s: no such configuration key", name, extra={"variable": name})


def _failure(exc: ValidationError, layers: _Layers) -> ValidationFailed:
    details: list[dict[str, Any]] = []
    problems: list[str] = []
    for error in json.loads(exc.json(include_url=False)):
        loc = tuple(str(part) for part in error["loc"])
        unknown = error["type"] == "extra_forbidden"
        if unknown or _is_secret(loc):
            error.pop("input", None)  # it may be, or contain, a secret
        path = loc
        if error["type"] == "insecure_bind":
            path = tuple(error["ctx"]["key"].split("."))  # a check across keys names one
        source = layers.source_of(path)
        message = "unknown key" if unknown else error["msg"]
        error["source"] = source
        details.append(error)
        problems.append(f"{source}: {'.'.join(path) or '(config)'}: {message}")
    return ValidationFailed("invalid configuration: " + "; ".join(problems), details=details)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> MarmotConfig:
    """Load the configuration: defaults, then a YAML file, then environment, then overrides.

    ``path`` defaults to ``$MARMOT_CONFIG``; with neither, no file is read. ``env``
    defaults to ``os.environ``: every key is read from ``MARMOT_<SECTION>_<KEY>``
    (top-level keys from ``MARMOT_<KEY>``); lists take JSON or comma-separated text;
    an empty variable unsets an optional key. ``MARMOT_TOKEN`` stands in for an unset
    ``rpc.token``. ``overrides`` maps dotted keys (``"data.dir"``) to values, as
    command-line flags give them; ``None`` values are skipped (flag not given).

    Raises ``ValidationFailed`` naming the source (file, variable or override) and the
    key of each problem, with pydantic's error list (plus ``source``) as ``details``.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    layers = _Layers()
    if path is not None:
        layers.put((), _read_file(Path(path), os.fspath(path)), os.fspath(path))
    elif environ.get("MARMOT_CONFIG"):
        label = f"{environ['MARMOT_CONFIG']} (MARMOT_CONFIG)"
        layers.put((), _read_file(Path(environ["MARMOT_CONFIG"]), label), label)
    _read_env(layers, environ)
    for key, value in (overrides or {}).items():
        if value is not None:
            layers.put(tuple(key.split(".")), value, f"override {key}")
    fallback = environ.get("MARMOT_TOKEN")
    if (
        fallback
        and layers.get(("rpc", "token")) is None
        and isinstance(layers.tree.get("rpc", {}), dict)
    ):
        layers.put(("rpc", "token"), fallback, "environment variable MARMOT_TOKEN")
    try:
        return MarmotConfig.model_validate(layers.tree)
    except ValidationError as exc:
        raise _failure(exc, layers) from exc
