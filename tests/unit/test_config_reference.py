from pathlib import Path

from moaa_ray import cli
from moaa_ray.config import dump_config, load_config
from moaa_ray.config.reference import config_keys

REPO = Path(__file__).resolve().parents[2]


def test_every_key_has_a_type_and_a_description():
    keys = config_keys()
    assert len(keys) > 150
    assert [k.key for k in keys if not k.description or not k.type] == []


def test_each_key_shows_the_default_that_applies_where_it_sits():
    defaults = {k.key: k.default for k in config_keys()}
    assert defaults["generate.sampling.max_new_tokens"] == "2048"
    assert defaults["preferences.sampling.max_new_tokens"] == "1024"
    assert defaults["preferences.judging.sampling.temperature"] == "0.0"
    assert defaults["models.<name>.path"] == "required"
    operational = {k.key for k in config_keys() if k.operational}
    assert "models.<name>.num_replicas" in operational and "models.<name>.path" not in operational


def test_the_reference_names_exactly_the_keys_a_loaded_config_has(monkeypatch):
    monkeypatch.chdir(REPO)
    loaded = dump_config(load_config(REPO / "configs" / "demo.yaml"))
    for key in (k.key for k in config_keys()):
        node = loaded
        for part in key.replace("<name>", "llama-a").replace("<i>", "0").split("."):
            if node is None:  # an optional section the demo leaves out
                break
            assert part in node if isinstance(node, dict) else int(part) < len(node), key
            node = node[part] if isinstance(node, dict) else node[int(part)]


def test_moaa_config_schema_prints_every_key(capsys):
    assert cli.main(["config", "--schema"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{k.key}: " in out for k in config_keys())
