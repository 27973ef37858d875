"""The ready-made configs in examples/: each is valid and its cases pass (end to end: tests/examples/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.cli.cases import load_cases, run_cases
from gateway.routing.compiled import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(path for path in EXAMPLES.glob("*.yaml") if not path.name.endswith(".cases.yaml"))
MISSIVE_SECRET = "missive-rule-secret"
_REQUIRED_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholder_env(config: Path, **overrides: str) -> dict[str, str]:
    """A value for every `${VAR}` without a default in the config: a URL, an id or a token, by the name."""
    env: dict[str, str] = {}
    for name in _REQUIRED_VARIABLE.findall(config.read_text(encoding="utf-8")):
        if name.endswith("_URL"):
            env[name] = f"https://{name.lower().replace('_', '-')}.example.invalid/hook"
        elif name.endswith("_ID"):
            env[name] = "4242"
        else:
            env[name] = f"placeholder-{name.lower()}"
    env["MISSIVE_SECRET"] = MISSIVE_SECRET
    return {**env, **overrides}


def cases_file(config: Path) -> Path:
    return config.with_name(config.name.removesuffix(".yaml") + ".cases.yaml")


def test_there_are_examples() -> None:
    names = {path.stem for path in CONFIGS}
    expected = {"slack-vip", "hubspot", "pipedrive", "salesforce", "teams", "missive-postback", "pagerduty", "fanout"}
    assert expected <= names


@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_each_example_is_valid_and_its_cases_pass(config: Path) -> None:
    env = placeholder_env(config)
    loaded = load_config(config, environ=env)
    assert loaded.routes, "an example without routes shows nothing"

    cases = load_cases(cases_file(config), loaded, environ=env)
    results = run_cases(loaded, cases)

    assert len(results) >= 3
    assert [(result.name, result.failures) for result in results if not result.passed] == []


@pytest.mark.parametrize("compose", ["compose.yaml", "compose.redis.yaml"])
def test_compose_files_mount_a_config_folder_and_read_an_env_file(compose: str) -> None:
    services = yaml.safe_load((EXAMPLES.parent / compose).read_text(encoding="utf-8"))["services"]
    gateways = [service for service in services.values() if service.get("build") == "."]
    assert gateways
    for service in gateways:
        # The folder, not one file: a file mount keeps the old copy when an editor renames over the file.
        [mount] = [volume for volume in service["volumes"] if volume.endswith(":/config:ro")]
        folder = re.fullmatch(r"\$\{GATEWAY_CONFIG_DIR:-(.+)\}:/config:ro", mount)
        file = re.fullmatch(r"/config/\$\{GATEWAY_CONFIG_FILE:-(.+)\}", service["environment"]["GATEWAY_CONFIG"])
        assert folder and file and (EXAMPLES.parent / folder.group(1) / file.group(1)).is_file()
        assert service["env_file"] == [{"path": ".env", "required": False}]
        # GATEWAY_PORT is the port the gateway listens on, whatever the host publishes it as.
        assert service["environment"]["GATEWAY_PORT"] == "${GATEWAY_PORT:-8080}"
        assert all(port.endswith(":${GATEWAY_PORT:-8080}") for port in service["ports"])
        assert service["stop_grace_period"] == "30s"
    example = (EXAMPLES.parent / ".env.example").read_text(encoding="utf-8")
    assert {"MISSIVE_SECRET=", "GATEWAY_PORT=8080"} <= set(example.splitlines())


def test_redis_compose_fsyncs_every_write() -> None:
    redis = yaml.safe_load((EXAMPLES.parent / "compose.redis.yaml").read_text(encoding="utf-8"))["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync always" in command
