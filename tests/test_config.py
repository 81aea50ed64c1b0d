from pathlib import Path

import pytest

from harmosearch.config import Config, config_from_dict, load_config
from harmosearch.errors import ConfigError, IndexStoreError


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


def test_sections_check_themselves_when_built_directly():
    from harmosearch.config import EncoderConfig, SearchConfig

    with pytest.raises(ConfigError, match=r"encoder\.dense_mode must be one of value, plain"):
        EncoderConfig(dense_mode="magic")
    with pytest.raises(ConfigError, match=r"search\.alpha must be a finite number"):
        SearchConfig(alpha=float("nan"))
    with pytest.raises(ConfigError, match=r"search.alpha must lie in \[0, 1\]"):
        SearchConfig(alpha=2)
    assert SearchConfig(alpha=1).alpha == 1.0 and isinstance(SearchConfig(alpha=1).alpha, float)


def test_environment_sits_between_defaults_and_the_file(tmp_path):
    env = {"HARMOSEARCH_INDEXES": "/data/idx", "HARMOSEARCH_CACHE": "/data/cache"}
    config = load_config(environ=env)
    assert config.paths.indexes == "/data/idx" and config.paths.cache_dir.as_posix() == "/data/cache"
    toml = tmp_path / "c.toml"
    toml.write_text('[paths]\nindexes = "/elsewhere"\n')
    assert load_config(toml, environ=env).paths.indexes == "/elsewhere"
    assert load_config(environ={}).paths.indexes == "auto"


def test_indexes_live_in_the_current_folder_when_it_has_them_else_with_the_user(tmp_path, monkeypatch):
    from harmosearch.indexes import latest_index, user_indexes

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("HARMOSEARCH_INDEXES", raising=False)
    monkeypatch.chdir(tmp_path)
    paths = load_config(environ={}).paths
    assert paths.indexes_dir == user_indexes() == tmp_path / "data" / "harmosearch" / "indexes"
    with pytest.raises(IndexStoreError, match=r"under .*/data/harmosearch/indexes/ \(the per-user index folder"):
        latest_index(paths.indexes_dir)
    (tmp_path / "indexes").mkdir()
    assert paths.indexes_dir == Path("indexes")
    with pytest.raises(IndexStoreError, match=r"under indexes/ \(the current folder's indexes/"):
        latest_index(paths.indexes_dir)
    assert load_config(environ={"HARMOSEARCH_INDEXES": "~/idx"}).paths.indexes_dir == Path("~/idx").expanduser()


def test_user_keys_include_values_equal_to_the_default():
    """A key set on the command line or in a file counts as the user's even when it holds the
    default value, so stored settings never silently replace it."""
    stored = {"encoder": {"dense_mode": "plain", "model": "stored-model"}, "regions": {"max_regions": 5}}
    keys = ("encoder.model", "encoder.dense_mode", "regions")
    kept = load_config(overrides={"encoder.dense_mode": "value"}).over(stored, keys)
    assert kept.encoder.dense_mode == "value"  # set by the user, though equal to the default
    assert kept.encoder.model == "stored-model" and kept.regions.max_regions == 5
    assert Config().over(stored, keys).encoder.dense_mode == "plain"
    assert load_config(overrides={"regions.max_regions": 128}).over(stored, keys).regions.max_regions == 128
    assert Config().over({"index": {"global_only": True}}, ("index",)) == Config()  # keys of older versions


def test_loss_weights_parse_named_or_by_position():
    from harmosearch.config import parse_weights

    assert parse_weights("lrc=0.5, tight=2") == {"train.w_lrc": 0.5, "train.w_tight": 2.0}
    assert parse_weights("0.5,2") == {"train.w_lrc": 0.5, "train.w_gr": 2.0}
    with pytest.raises(ConfigError, match="unknown loss weight 'xyz'"):
        parse_weights("xyz=1")
    with pytest.raises(ConfigError, match="weight lrc: expected a number"):
        parse_weights("lrc=lots")
    assert parse_weights("lrc=1000") == {"train.w_lrc": 1000.0}  # the bound itself is a weight
    # Found by the CLI fuzz: with --losses gc the weight of lrc went unchecked by training.
    with pytest.raises(ConfigError, match=r"weight gr must lie in \[0, 1000\], got 1e\+300"):
        parse_weights("lrc=1,gr=1e300")
    with pytest.raises(ConfigError, match=r"train\.w_tight must lie in"):
        load_config(overrides={"train.w_tight": 5000})


def test_min_score_takes_a_number_or_auto():
    from harmosearch.config import SearchConfig

    assert load_config(overrides={"search.min_score": "auto"}).search.min_score == "auto"
    assert load_config(overrides={"search.min_score": "0.25"}).search.min_score == 0.25
    assert SearchConfig().min_score is None
    with pytest.raises(ConfigError, match=r"search\.min_score must be a number or auto, got 'high'"):
        SearchConfig(min_score="high")


def test_media_settings_and_excludes():
    from harmosearch.config import MediaConfig

    config = load_config(overrides={"media.every_s": "0.5", "index.exclude": "raw/,*.tmp"})
    assert config.media.every_s == 0.5 and config.index.exclude == ("raw/", "*.tmp")
    with pytest.raises(ConfigError, match=r"media\.every_s must be above 0"):
        MediaConfig(every_s=0)
    with pytest.raises(ConfigError, match=r"media\.scene_threshold must lie in \[0, 1\]"):
        MediaConfig(scene_threshold=2)


def test_integers_keep_every_digit():
    """A large integer, given as a number or as text, is not rounded through a float."""
    huge = 99999999999999999999
    assert load_config(overrides={"search.k": huge}).search.k == huge
    assert load_config(overrides={"search.k": str(huge)}).search.k == huge
    assert load_config(overrides={"search.k": "2e1"}).search.k == 20
