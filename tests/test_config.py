import pytest

from harmosearch.config import Config, config_from_dict, load_config
from harmosearch.errors import ConfigError


def test_defaults_are_frozen():
    config = Config()
    with pytest.raises(AttributeError):
        config.search.k = 3  # type: ignore[misc]


def test_toml_then_flags_override_in_order(tmp_path):
    toml = tmp_path / "h.toml"
    toml.write_text("[search]\nalpha = 0.2\nk = 7\n[regions]\nscales = [1.0, 0.5]\n")
    config = load_config(toml, {"search.k": 3, "search.alpha": None})
    assert config.search.k == 3  # flag beats file
    assert config.search.alpha == 0.2  # None means "flag not given": the file's value stays
    assert config.regions.scales == (1.0, 0.5)
    assert config.encoder == Config().encoder


def test_round_trip_through_dict():
    config = load_config(overrides={"regions.max_regions": 9, "train.losses": "gc,lrc"})
    assert config_from_dict(config.to_dict()) == config
    assert config.train.losses == ("gc", "lrc")
    assert config.digest() == config_from_dict(config.to_dict()).digest()
    assert config.digest() != Config().digest()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"search.alpha": 1.5}, "alpha"),
        ({"search.k": 0}, "search.k"),
        ({"search.k": "many"}, "expected a number"),
        ({"search.colour": 1}, "unknown config key"),
        ({"encoder.dense_mode": "magic"}, "dense_mode"),
        ({"train.losses": "gc,xyz"}, "train.losses"),
        ({"regions.scales": "0,1"}, "regions.scales"),
    ],
)
def test_bad_values_raise_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)


def test_bad_toml_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[search\nk=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
