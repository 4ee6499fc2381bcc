"""The daemon configuration: defaults, YAML, environment, overrides and their errors."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from marmot.config import (
    CLIENT_ENV_NAMES,
    DEFAULT_INGEST_URL,
    DEFAULT_RPC_URL,
    MarmotConfig,
    environment_names,
    load_config,
)
from marmot.engine.errors import ValidationFailed

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "configs" / "marmot.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "marmot.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults and the shipped file ---------------------------------------------------


def test_defaults_suit_one_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.data.dir == tmp_path / ".marmot-data"
    assert config.data.dir.is_absolute()
    assert config.data.event_retention_days == 7
    assert config.data.checkpoint_interval_s == 5
    assert config.ray.address is None
    assert config.ray.namespace == "marmot"
    assert config.ray.num_cpus is None
    assert config.ray.object_store_memory_mb == 200
    assert config.ray.log_to_driver is False
    assert config.ingest.pull_url == DEFAULT_INGEST_URL == "tcp://127.0.0.1:7600"
    assert config.ingest.sub_urls == []
    assert config.ingest.sub_topic == ""
    assert config.ingest.max_frame_bytes == 1_048_576
    assert config.ingest.high_water_mark == 10_000
    assert config.rpc.url == DEFAULT_RPC_URL == "tcp://127.0.0.1:7601"
    assert config.rpc.token is None
    assert (config.http.enabled, config.http.host, config.http.port) == (True, "127.0.0.1", 7602)
    assert config.router.batch_max_events == 4096
    assert config.router.max_inflight_per_actor == 2
    assert config.automations_per_actor == "auto"
    assert config.max_automation_actors is None
    assert config.max_automations == 20_000
    assert config.executors.pool_size == 2
    assert config.executors.action_timeout_s == 30
    assert config.executors.max_retries == 5
    assert config.limits.max_labels == 500
    assert config.limits.max_related == 500
    assert config.limits.max_payload_bytes == 262_144
    assert config.orchestrator.api_url is None
    assert config.orchestrator.api_key is None
    assert config.log_level == "INFO"
    assert config == MarmotConfig()


def test_shipped_config_file_equals_the_defaults() -> None:
    assert load_config(SHIPPED, env={}) == load_config(env={})


def test_shipped_config_file_names_every_environment_variable() -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    missing = [name for name in environment_names() if not re.search(rf"\b{name}\b", text)]
    assert missing == []


def test_every_key_has_its_own_variable() -> None:
    names = environment_names()
    assert names["MARMOT_DATA_DIR"] == "data.dir"
    assert names["MARMOT_RPC_URL"] == "rpc.url"
    assert names["MARMOT_INGEST_SUB_URLS"] == "ingest.sub_urls"
    assert names["MARMOT_AUTOMATIONS_PER_ACTOR"] == "automations_per_actor"
    assert len(set(names.values())) == len(names)
    assert not (set(names) & (CLIENT_ENV_NAMES - {"MARMOT_RPC_URL"}))


def test_webhook_keys_default_to_a_mebibyte_and_the_bound_address() -> None:
    config = load_config(env={})
    assert config.http.max_body_bytes == 1_048_576
    assert config.http.public_url is None
    names = environment_names()
    assert names["MARMOT_HTTP_MAX_BODY_BYTES"] == "http.max_body_bytes"
    assert names["MARMOT_HTTP_PUBLIC_URL"] == "http.public_url"
    set_by_env = load_config(
        env={
            "MARMOT_HTTP_MAX_BODY_BYTES": "4096",
            "MARMOT_HTTP_PUBLIC_URL": "https://hooks.example.com",
        }
    )
    assert set_by_env.http.max_body_bytes == 4096
    assert set_by_env.http.public_url == "https://hooks.example.com"
    assert load_config(env={"MARMOT_HTTP_PUBLIC_URL": ""}).http.public_url is None


def test_config_is_immutable() -> None:
    config = load_config(env={})
    with pytest.raises(ValueError, match="frozen"):
        config.http.port = 1  # type: ignore[misc]


# -- the YAML file -------------------------------------------------------------------


def test_yaml_file_sets_nested_and_top_level_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data:
  dir: /srv/marmot
ray:
  address: ray://head:10001
ingest:
  sub_urls: [tcp://10.0.0.5:5556, ipc:///tmp/events]
rpc:
  url: tcp://127.0.0.1:*
router:
  max_inflight_per_actor: 5
automations_per_actor: 8
log_level: debug
""",
    )
    config = load_config(path, env={})
    assert config.data.dir == Path("/srv/marmot")
    assert config.ray.address == "ray://head:10001"
    assert config.ingest.sub_urls == ["tcp://10.0.0.5:5556", "ipc:///tmp/events"]
    assert config.rpc.url == "tcp://127.0.0.1:*"
    assert config.router.max_inflight_per_actor == 5
    assert config.automations_per_actor == 8
    assert config.log_level == "DEBUG"
    assert config.http == MarmotConfig().http  # untouched sections keep their defaults


def test_config_file_comes_from_marmot_config_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  port: 9100\n")
    assert load_config(env={"MARMOT_CONFIG": str(path)}).http.port == 9100


def test_explicit_path_wins_over_marmot_config_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  port: 9100\n")
    config = load_config(path, env={"MARMOT_CONFIG": str(tmp_path / "missing.yaml")})
    assert config.http.port == 9100


def test_empty_file_and_empty_section_mean_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), env={}) == load_config(env={})
    assert load_config(write(tmp_path, "rpc:\n  # url: x\n"), env={}) == load_config(env={})


def test_relative_data_dir_is_taken_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(env={"MARMOT_DATA_DIR": "state/m"}).data.dir == tmp_path / "state" / "m"


def test_unknown_key_in_yaml_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "rpc:\n  url: tcp://127.0.0.1:7601\n  tokn: abc\n")
    with pytest.raises(ValidationFailed) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert "rpc.tokn" in message
    assert str(path) in message
    assert "unknown key" in message
    assert "abc" not in message and "abc" not in json.dumps(caught.value.details)
    assert caught.value.details[0]["loc"] == ["rpc", "tokn"]


def test_unknown_section_in_yaml_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match=r"routr: unknown key"):
        load_config(write(tmp_path, "routr:\n  batch_max_events: 10\n"), env={})


def test_bad_value_in_yaml_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  port: 70000\n")
    with pytest.raises(ValidationFailed) as caught:
        load_config(path, env={})
    assert f"{path}: http.port:" in str(caught.value)
    assert caught.value.details[0]["source"] == str(path)
    assert caught.value.details[0]["type"] == "less_than_equal"


@pytest.mark.parametrize(
    ("text", "reason"),
    [("- a\n- b\n", "must be a mapping"), ("rpc: [\n", "not valid YAML")],
)
def test_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(ValidationFailed, match=reason):
        load_config(write(tmp_path, text), env={})


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml", env={})


# -- the environment -----------------------------------------------------------------


def test_environment_sets_nested_list_and_top_level_keys() -> None:
    config = load_config(
        env={
            "MARMOT_RPC_URL": "ipc:///tmp/marmot-rpc",
            "MARMOT_ROUTER_MAX_INFLIGHT_PER_ACTOR": "3",
            "MARMOT_INGEST_SUB_URLS": "tcp://a:5556, tcp://b:5556",
            "MARMOT_HTTP_ENABLED": "false",
            "MARMOT_AUTOMATIONS_PER_ACTOR": "16",
            "MARMOT_LOG_LEVEL": "warning",
            "MARMOT_DATA_DIR": "/var/lib/marmot",
        }
    )
    assert config.rpc.url == "ipc:///tmp/marmot-rpc"
    assert config.router.max_inflight_per_actor == 3
    assert config.ingest.sub_urls == ["tcp://a:5556", "tcp://b:5556"]
    assert config.http.enabled is False
    assert config.automations_per_actor == 16
    assert config.log_level == "WARNING"
    assert config.data.dir == Path("/var/lib/marmot")


def test_environment_list_may_be_json() -> None:
    config = load_config(env={"MARMOT_INGEST_SUB_URLS": '["tcp://a:1", "ipc:///b"]'})
    assert config.ingest.sub_urls == ["tcp://a:1", "ipc:///b"]


def test_empty_variable_unsets_an_optional_key(tmp_path: Path) -> None:
    path = write(tmp_path, "ray:\n  address: auto\n  num_cpus: 2\n")
    config = load_config(path, env={"MARMOT_RAY_ADDRESS": "", "MARMOT_RAY_NUM_CPUS": ""})
    assert config.ray.address is None
    assert config.ray.num_cpus is None


def test_bad_value_in_environment_names_the_variable() -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_config(env={"MARMOT_HTTP_PORT": "eighty"})
    assert "environment variable MARMOT_HTTP_PORT" in str(caught.value)
    assert "http.port" in str(caught.value)
    assert caught.value.details[0]["loc"] == ["http", "port"]


def test_bad_json_list_in_environment_names_the_variable() -> None:
    with pytest.raises(ValidationFailed, match="MARMOT_INGEST_SUB_URLS"):
        load_config(env={"MARMOT_INGEST_SUB_URLS": "[tcp://a:1"})


def test_unrelated_and_client_variables_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="marmot.config"):
        config = load_config(
            env={
                "MARMOT_INGEST_URL": "tcp://10.1.1.1:7600",
                "MARMOT_CONFORMANCE_DIR": "/somewhere",
                "PATH": "/usr/bin",
            }
        )
    assert config == load_config(env={})
    assert caplog.records == []


def test_misspelt_section_variable_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="marmot.config"):
        config = load_config(env={"MARMOT_RPC_TOKN": "s3cret"})
    assert config.rpc.token is None
    assert "MARMOT_RPC_TOKN" in caplog.text
    assert "s3cret" not in caplog.text


def test_environment_is_read_from_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [*environment_names(), *CLIENT_ENV_NAMES]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MARMOT_MAX_AUTOMATIONS", "42")
    assert load_config().max_automations == 42


# -- precedence and overrides --------------------------------------------------------


def test_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "http:\n  port: 8001\n  host: 127.0.0.2\nrouter:\n  batch_max_events: 10\n"
        "executors:\n  pool_size: 3\n",
    )
    env = {"MARMOT_HTTP_PORT": "8002", "MARMOT_ROUTER_BATCH_MAX_EVENTS": "20"}
    config = load_config(path, env=env, overrides={"http.port": 8003})
    assert config.http.port == 8003  # override beats environment and file
    assert config.router.batch_max_events == 20  # environment beats file
    assert config.executors.pool_size == 3  # file beats defaults
    assert config.http.host == "127.0.0.2"  # overriding one key keeps its siblings


def test_overrides_take_dotted_keys_and_skip_unset_flags(tmp_path: Path) -> None:
    config = load_config(
        env={"MARMOT_DATA_DIR": "/from/env"},
        overrides={"data.dir": None, "log_level": "error", "limits": {"max_labels": 7}},
    )
    assert config.data.dir == Path("/from/env")
    assert config.log_level == "ERROR"
    assert config.limits.max_labels == 7
    assert load_config(env={}, overrides={"data.dir": tmp_path}).data.dir == tmp_path


def test_bad_override_names_the_override() -> None:
    with pytest.raises(ValidationFailed, match=r"override data\.dirr: data\.dirr: unknown key"):
        load_config(env={}, overrides={"data.dirr": "/x"})
    with pytest.raises(ValidationFailed, match=r"override router\.batch_max_events"):
        load_config(env={}, overrides={"router.batch_max_events": 0})


# -- value checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MARMOT_RPC_URL", "http://127.0.0.1:7601"),
        ("MARMOT_INGEST_PULL_URL", "tcp://127.0.0.1"),
        ("MARMOT_INGEST_PULL_URL", "tcp://127.0.0.1:0"),
        ("MARMOT_INGEST_SUB_URLS", "tcp://a:1,udp://b:2"),
        ("MARMOT_HTTP_PORT", "0"),
        ("MARMOT_HTTP_MAX_BODY_BYTES", "0"),
        ("MARMOT_HTTP_PUBLIC_URL", "hooks.example.com"),
        ("MARMOT_RAY_ADDRESS", "head-node"),
        ("MARMOT_RAY_OBJECT_STORE_MEMORY_MB", "10"),
        ("MARMOT_AUTOMATIONS_PER_ACTOR", "0"),
        ("MARMOT_ROUTER_MAX_INFLIGHT_PER_ACTOR", "0"),
        ("MARMOT_EXECUTORS_ACTION_TIMEOUT_S", "0"),
        ("MARMOT_DATA_CHECKPOINT_INTERVAL_S", "0"),
        ("MARMOT_ORCHESTRATOR_API_URL", "127.0.0.1:4200"),
        ("MARMOT_LOG_LEVEL", "chatty"),
    ],
)
def test_invalid_values_are_refused(variable: str, value: str) -> None:
    with pytest.raises(ValidationFailed, match=variable):
        load_config(env={variable: value})


@pytest.mark.parametrize("address", ["auto", "ray://10.0.0.1:10001", "10.0.0.1:6379"])
def test_ray_cluster_addresses_are_accepted(address: str) -> None:
    assert load_config(env={"MARMOT_RAY_ADDRESS": address}).ray.address == address


def test_local_ray_address_means_embedded() -> None:
    assert load_config(env={"MARMOT_RAY_ADDRESS": "local"}).ray.address is None


def test_empty_token_variable_leaves_token_unset() -> None:
    assert load_config(env={"MARMOT_RPC_TOKEN": ""}).rpc.token is None


def test_empty_token_in_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match=r"rpc\.token: must not be empty"):
        load_config(write(tmp_path, "rpc:\n  token: ''\n"), env={})


# -- binding beyond loopback ---------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("MARMOT_RPC_URL", "tcp://0.0.0.0:7601"),
        ("MARMOT_RPC_URL", "tcp://*:7601"),
        ("MARMOT_RPC_URL", "tcp://[::]:7601"),
    ],
)
def test_open_bind_without_token_is_refused(variable: str, url: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_config(env={variable: url})
    message = str(caught.value)
    assert "refusing to bind" in message
    assert "without rpc.token" in message
    assert f"environment variable {variable}" in message


def test_curve_with_a_clients_folder_allows_an_open_bind_without_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"MARMOT_RPC_URL": "tcp://0.0.0.0:7601", "MARMOT_CURVE_SECRET_KEY_FILE": "k/d.key_secret"}
    # Encrypted, but anyone with the daemon's public key would get in: refused.
    with pytest.raises(ValidationFailed, match=r"curve\.clients_dir"):
        load_config(env=env)
    config = load_config(env={**env, "MARMOT_CURVE_CLIENTS_DIR": "clients"})
    # Paths are made absolute at load time, like data.dir.
    assert config.curve.secret_key_file == tmp_path / "k" / "d.key_secret"
    assert config.curve.clients_dir == tmp_path / "clients"


def test_open_rpc_bind_message_says_what_it_refuses() -> None:
    with pytest.raises(ValidationFailed, match=r"refusing to bind RPC to 0\.0\.0\.0 without rpc"):
        load_config(env={"MARMOT_RPC_URL": "tcp://0.0.0.0:7601"})


@pytest.mark.parametrize(
    "url",
    [
        "tcp://127.0.0.1:7601",
        "tcp://127.0.0.2:7601",
        "tcp://localhost:7601",
        "tcp://[::1]:7601",
        "ipc:///tmp/marmot.sock",
        "inproc://marmot",
    ],
)
def test_loopback_and_local_binds_need_no_token(url: str) -> None:
    assert load_config(env={"MARMOT_RPC_URL": url, "MARMOT_INGEST_PULL_URL": url}).rpc.url == url


def test_open_bind_with_token_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "rpc:\n  url: tcp://0.0.0.0:7601\n  token: s3cret-token\n")
    config = load_config(path, env={})
    assert config.rpc.url == "tcp://0.0.0.0:7601"
    assert config.rpc.token is not None
    assert config.rpc.token.get_secret_value() == "s3cret-token"


def test_sub_urls_may_point_anywhere_without_token() -> None:
    config = load_config(env={"MARMOT_INGEST_SUB_URLS": "tcp://10.0.0.9:5556"})
    assert config.ingest.sub_urls == ["tcp://10.0.0.9:5556"]


# -- secrets -------------------------------------------------------------------------


def test_marmot_token_stands_in_for_an_unset_rpc_token() -> None:
    config = load_config(env={"MARMOT_TOKEN": "client-token", "MARMOT_RPC_URL": "tcp://*:7601"})
    assert config.rpc.token is not None
    assert config.rpc.token.get_secret_value() == "client-token"


def test_rpc_token_wins_over_marmot_token(tmp_path: Path) -> None:
    from_file = write(tmp_path, "rpc:\n  token: file-token\n")
    config = load_config(from_file, env={"MARMOT_TOKEN": "client-token"})
    assert config.rpc.token is not None
    assert config.rpc.token.get_secret_value() == "file-token"
    config = load_config(env={"MARMOT_TOKEN": "client-token", "MARMOT_RPC_TOKEN": "env-token"})
    assert config.rpc.token is not None
    assert config.rpc.token.get_secret_value() == "env-token"


def test_secrets_are_hidden_from_repr_and_redacted_dump() -> None:
    config = load_config(
        env={
            "MARMOT_RPC_TOKEN": "rpc-secret-value",
            "MARMOT_ORCHESTRATOR_API_URL": "http://127.0.0.1:4200/api",
            "MARMOT_ORCHESTRATOR_API_KEY": "api-secret-value",
        }
    )
    for text in (repr(config), str(config), repr(config.rpc), json.dumps(config.redacted())):
        assert "rpc-secret-value" not in text
        assert "api-secret-value" not in text
    redacted = config.redacted()
    assert redacted["rpc"]["token"] == "***"
    assert redacted["orchestrator"]["api_key"] == "***"
    assert redacted["orchestrator"]["api_url"] == "http://127.0.0.1:4200/api"
    assert redacted["http"]["port"] == 7602
    assert redacted["data"]["dir"] == os.fspath(config.data.dir)


def test_redacted_dump_shows_unset_secrets_as_null() -> None:
    redacted = load_config(env={}).redacted()
    assert redacted["rpc"]["token"] is None
    assert redacted["orchestrator"]["api_key"] is None
    json.dumps(redacted)  # JSON-safe


def test_errors_do_not_echo_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "orchestrator:\n  api_key: api-secret-value\nrpc:\n  url: tcp://0.0.0.0:1\n",
    )
    with pytest.raises(ValidationFailed) as caught:
        load_config(path, env={})
    assert "api-secret-value" not in str(caught.value)
    assert "api-secret-value" not in json.dumps(caught.value.details)
    assert caught.value.details[0]["source"] == str(path)
