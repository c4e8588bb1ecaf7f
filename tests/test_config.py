from pathlib import Path

import pytest

from chatbot.config import ConfigError, load_settings


def test_defaults_point_at_the_embedded_models_and_project_folders():
    settings = load_settings()
    assert settings.base_model == "embedded"
    assert settings.embedding_model == "embedded"
    assert settings.knowledge_dir == Path("knowledge")
    assert settings.data_dir == Path(".chatbot")
    assert settings.models_cache_dir == Path(".chatbot/cache")
    assert settings.host == "127.0.0.1"
    assert settings.device == "auto"


def test_environment_overrides_file_and_file_overrides_defaults(monkeypatch):
    Path("chatbot.toml").write_text('top_k = 7\nknowledge_dir = "docs"\n')
    monkeypatch.setenv("CHATBOT_TOP_K", "9")
    settings = load_settings()
    assert settings.top_k == 9
    assert settings.knowledge_dir == Path("docs")


def test_config_file_can_be_named_by_variable(monkeypatch, tmp_path):
    path = tmp_path / "other.toml"
    path.write_text("max_new_tokens = 12\n")
    monkeypatch.setenv("CHATBOT_CONFIG", str(path))
    assert load_settings().max_new_tokens == 12


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("CHATBOT_TOP_K", "0", "top_k"),
        ("CHATBOT_TOP_K", "many", "top_k"),
        ("CHATBOT_DEVICE", "gpu", "device"),
        ("CHATBOT_DTYPE", "int3", "dtype"),
        ("CHATBOT_TEMPERATURE", "-1", "temperature"),
        ("CHATBOT_PORT", "70000", "port"),
    ],
)
def test_bad_values_fail_naming_the_key(monkeypatch, variable, value, named):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert named in str(error.value)
    assert variable in str(error.value)


def test_unknown_environment_key_is_named(monkeypatch):
    monkeypatch.setenv("CHATBOT_TOPK", "3")
    with pytest.raises(ConfigError, match="CHATBOT_TOPK: unknown setting"):
        load_settings()


def test_unknown_file_key_is_named():
    Path("chatbot.toml").write_text("chunk_sise = 100\n")
    with pytest.raises(ConfigError, match="chunk_sise.*unknown setting"):
        load_settings()


def test_malformed_file_is_reported():
    Path("chatbot.toml").write_text("top_k = = 3\n")
    with pytest.raises(ConfigError, match="chatbot.toml"):
        load_settings()


def test_missing_named_config_file_is_reported(monkeypatch):
    monkeypatch.setenv("CHATBOT_CONFIG", "/nonexistent/chatbot.toml")
    with pytest.raises(ConfigError, match="CHATBOT_CONFIG"):
        load_settings()


def test_overlap_must_be_smaller_than_chunk_size():
    with pytest.raises(ConfigError, match="chunk_overlap"):
        load_settings(chunk_size=50, chunk_overlap=50)


def test_every_problem_is_listed_at_once(monkeypatch):
    monkeypatch.setenv("CHATBOT_TOP_K", "0")
    monkeypatch.setenv("CHATBOT_NOPE", "1")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "top_k" in str(error.value) and "CHATBOT_NOPE" in str(error.value)
