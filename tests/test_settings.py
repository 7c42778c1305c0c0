import pytest

from app.errors import SettingsError
from app.settings import Settings


def test_defaults_are_valid():
    settings = Settings.from_env({})
    assert settings.web_port == 8000
    assert settings.redis_url.startswith("redis://")


def test_values_from_environment():
    settings = Settings.from_env({"BERTH_WEB_PORT": "9001", "BERTH_LOG_LEVEL": "DEBUG",
                                  "REDIS_URL": "redis://127.0.0.1:7000/1"})
    assert settings.web_port == 9001
    assert settings.log_level == "debug"
    assert settings.redis_url == "redis://127.0.0.1:7000/1"


@pytest.mark.parametrize("env, name", [
    ({"BERTH_WEB_PORT": "http"}, "BERTH_WEB_PORT"),
    ({"BERTH_HTTP_PORT": "70000"}, "BERTH_HTTP_PORT"),
    ({"REDIS_URL": "http://example"}, "REDIS_URL"),
    ({"BERTH_LOG_FORMAT": "xml"}, "BERTH_LOG_FORMAT"),
    ({"BERTH_SECRET_KEY": "short"}, "BERTH_SECRET_KEY"),
])
def test_invalid_value_names_the_variable(env, name):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(name)
    assert "\n" not in str(info.value)


def test_settings_are_frozen():
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.web_port = 1


def test_every_setting_is_documented():
    for env, _default, doc in Settings.documentation():
        assert env and doc
