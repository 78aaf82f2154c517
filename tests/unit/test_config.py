"""Config resolution: defaults < YAML file < options < key=value overrides, with readable errors."""

import pytest

from brainlearn.config import dump_config, load_config, parse_override, read_yaml
from brainlearn.errors import BrainlearnError

DEFAULTS = {
    "table": None,
    "out": "runs/x",
    "model": {"width": 32, "dropout": 0.5, "pretrained": False},
    "trainer": {"max_epochs": 10, "lr": 1e-4},
    "modalities": ["t1"],
}


def test_defaults_file_flags_and_overrides_in_order(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("model:\n  width: 64\ntrainer:\n  max_epochs: 3\n")
    config = load_config(
        DEFAULTS,
        path=config_file,
        flags={"trainer.max_epochs": 4},
        overrides=["trainer.lr=1e-3", "modalities=[t1, pet]", "model.pretrained=true"],
    )
    assert config["model"] == {"width": 64, "dropout": 0.5, "pretrained": True}
    assert config["trainer"] == {"max_epochs": 4, "lr": 1e-3}
    assert config["modalities"] == ["t1", "pet"]
    assert DEFAULTS["model"]["width"] == 32  # defaults are not modified


def test_unknown_key_suggests_the_nearest(tmp_path):
    with pytest.raises(BrainlearnError, match=r"unknown key 'trainer.max_epoch'\. Did you mean 'trainer.max_epochs'\?"):
        load_config(DEFAULTS, overrides=["trainer.max_epoch=3"])
    config_file = tmp_path / "c.yaml"
    config_file.write_text("modl:\n  width: 3\n")
    with pytest.raises(BrainlearnError, match=r"c\.yaml: unknown key 'modl'\. Did you mean 'model'\?"):
        load_config(DEFAULTS, path=config_file)


def test_wrong_types_are_refused_with_the_key():
    with pytest.raises(BrainlearnError, match=r"'model.width' must be an integer, got 'wide'"):
        load_config(DEFAULTS, overrides=["model.width=wide"])
    with pytest.raises(BrainlearnError, match=r"'model.pretrained' must be true or false"):
        load_config(DEFAULTS, overrides=["model.pretrained=3"])
    with pytest.raises(BrainlearnError, match=r"'model' is a section"):
        load_config(DEFAULTS, overrides=["model=3"])


def test_numbers_in_yaml_1_1_form_still_parse():
    assert load_config(DEFAULTS, overrides=["trainer.lr=2e-5"])["trainer"]["lr"] == 2e-5
    assert load_config(DEFAULTS, overrides=["model.dropout=1"])["model"]["dropout"] == 1.0


def test_relative_paths_in_a_config_file_resolve_against_its_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    config_file = tmp_path / "sub" / "c.yaml"
    config_file.write_text("table: data/participants.tsv\nout: /abs/run\n")
    config = load_config(DEFAULTS, path=config_file, path_keys=("table", "out"))
    assert config["table"] == str(tmp_path / "sub" / "data" / "participants.tsv")
    assert config["out"] == "/abs/run"


def test_yaml_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  width: [1, 2\n")
    with pytest.raises(BrainlearnError, match=r"bad\.yaml line \d+, column \d+: not valid YAML"):
        read_yaml(bad)
    with pytest.raises(BrainlearnError, match="config file not found"):
        read_yaml(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(BrainlearnError, match="must be a mapping"):
        read_yaml(tmp_path / "list.yaml")


def test_yaml_cannot_construct_python_objects(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("out: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(BrainlearnError, match="not valid YAML"):
        load_config(DEFAULTS, path=evil)


def test_override_syntax_errors():
    with pytest.raises(BrainlearnError, match="expected key=value"):
        parse_override("trainer.max_epochs")
    assert parse_override("a.b=") == ("a.b", None)


def test_dump_round_trips():
    config = load_config(DEFAULTS, overrides=["trainer.lr=3e-4"])
    import yaml

    assert yaml.safe_load(dump_config(config)) == config
