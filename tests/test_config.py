"""Configuration: file, environment, run-time changes, and what child processes see."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import terra
from terra import config
from terra.errors import ConfigError


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("TERRA_CONFIG_PATH", "TERRA_STORAGE_DIR", "TERRA_CONFIG_OVERRIDES"):
        monkeypatch.delenv(var, raising=False)
    config.reset()
    yield monkeypatch
    config.reset()


def test_default_store_is_home_dot_terra(clean_env):
    assert terra.get_config().store_path == os.path.expanduser(os.path.join("~", ".terra"))


def test_file_then_environment(clean_env, tmp_path):
    cfg = tmp_path / "terra_config.json"
    cfg.write_text(json.dumps({"storage_dir": str(tmp_path / "from_file"), "allow_pickle": False,
                               "slack_channel": "#runs", "slack_web_client_id": "xoxb-secret"}))
    clean_env.setenv("TERRA_CONFIG_PATH", str(cfg))
    config.reset()
    c = terra.get_config()
    assert c.store_path == str(tmp_path / "from_file") and c.allow_pickle is False
    assert "slack_web_client_id" not in c.public()  # never copied into records
    clean_env.setenv("TERRA_STORAGE_DIR", str(tmp_path / "from_env"))
    config.reset()
    assert terra.get_config().store_path == str(tmp_path / "from_env")


def test_bad_configuration_is_a_clear_error(clean_env, tmp_path):
    cfg = tmp_path / "terra_config.json"
    cfg.write_text(json.dumps({"storage_dir": "x", "colour": "blue"}))
    clean_env.setenv("TERRA_CONFIG_PATH", str(cfg))
    config.reset()
    with pytest.raises(ConfigError, match="colour"):
        terra.get_config()
    cfg.write_text("{not json")
    config.reset()
    with pytest.raises(ConfigError, match="TERRA_CONFIG_PATH"):
        terra.get_config()
    clean_env.delenv("TERRA_CONFIG_PATH")
    config.reset()
    with pytest.raises(ConfigError, match="allow_pickle"):
        terra.configure(allow_pickle="no")


def test_configure_reaches_child_processes_and_reset_forgets(clean_env, tmp_path):
    terra.configure(storage_dir=str(tmp_path / "s"), quiet=True)
    code = "import terra; c = terra.get_config(); print(c.store_path, c.quiet)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(tmp_path / "s"), "True"]
    config.reset()
    assert "TERRA_CONFIG_OVERRIDES" not in os.environ
    assert terra.get_config().store_path != str(tmp_path / "s")
