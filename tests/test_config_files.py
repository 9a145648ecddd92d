"""Task and preset YAMLs: the parse cache never serves a stale file, and a bad file is an error
that names the file and the field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from dt_eval.tasks.config import TaskConfigError, load_task
from dt_eval.tasks.presets import PresetError, load_preset
from dt_eval.util.yamlfile import load_yaml

from .cli import invoke
from .paths import REPO


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DT_EVAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "yaml"


def test_parsed_yaml_is_reused_only_while_the_file_holds_the_same_text(tmp_path, cache):
    f = tmp_path / "x.yaml"
    f.write_text("a: 1\nb: [x, y]\n")
    assert load_yaml(f) == {"a": 1, "b": ["x", "y"]}
    (stored,) = cache.glob("*.json")
    assert json.loads(stored.read_text())["data"] == {"a": 1, "b": ["x", "y"]}
    f.write_text("a: 2\nb: [x, y]\n")  # same length, same second: only the text tells
    assert load_yaml(f) == {"a": 2, "b": ["x", "y"]}
    stored.write_text(json.dumps({"format": 1, "source": f.read_text(), "data": {"a": "forged"}}))
    assert load_yaml(f) == {"a": "forged"}  # the cache is used while the text is the same
    stored.write_text("not json")
    assert load_yaml(f) == {"a": 2, "b": ["x", "y"]}  # a broken cache file is parsed over


def test_what_json_cannot_hold_is_not_cached_but_loads(tmp_path, cache):
    f = tmp_path / "d.yaml"
    f.write_text("when: 2025-08-09\n1: integer key\n")
    data = load_yaml(f)
    assert str(data["when"]) == "2025-08-09" and data[1] == "integer key"
    assert not list(cache.glob("*.json"))
    assert load_yaml(f) == data


def test_a_cached_file_is_read_without_importing_yaml(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("a: [1, 2]\n")
    code = ("import sys\nfrom dt_eval.util.yamlfile import load_yaml\n"
            f"print(load_yaml({str(f)!r}), 'yaml' in sys.modules)")
    env = {"DT_EVAL_CACHE": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                           env={**__import__("os").environ, **env}).stdout.strip() for _ in range(2)]
    assert runs == ["{'a': [1, 2]} True", "{'a': [1, 2]} False"]


def test_not_yaml_is_an_error_naming_the_file(tmp_path, cache):
    f = tmp_path / "broken.yaml"
    f.write_text("name: broken\ndata: [unclosed\n")
    with pytest.raises(TaskConfigError, match=r"broken\.yaml: not a valid task config: not valid YAML"):
        load_task(str(f))


def test_a_bad_task_yaml_names_the_file_and_the_field(tmp_path, cache):
    raw = yaml.safe_load((REPO / "tasks" / "mmau.yaml").read_text())
    raw["name"] = "mine"
    del raw["data"]["local"]["audio_field"]
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(TaskConfigError) as e:
        load_task(str(f))
    msg = str(e.value)
    assert msg.startswith(f"{f}: not a valid task config: ")
    assert "data.local: Object missing required field `audio_field`" in msg
    raw["data"]["local"]["audio_field"] = "audio_id"
    raw["breakdowns"][1]["colour"] = "red"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(TaskConfigError, match=r"breakdowns\[1\]\.colour: unknown field"):
        load_task(str(f))
    raw["breakdowns"][1].pop("colour")
    raw["data"]["expected_items"] = "many"
    f.write_text(yaml.safe_dump(raw))
    res = invoke(["score", "--task", str(f), "-p", str(tmp_path / "p.json")])
    assert res.exit_code == 2 and "data.expected_items: Expected `int | null`, got `str`" in res.stderr, res.stderr


def test_a_bad_preset_names_the_file_and_the_field(tmp_path, cache):
    raw = yaml.safe_load((REPO / "serve" / "presets" / "qwen2-audio.yaml").read_text())
    raw["family"] = "mine"
    raw["generation"]["top_p"] = 1.5
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump(raw))
    with pytest.raises(PresetError, match=r"mine\.yaml: not a valid model preset: generation\.top_p: Expected "
                                          r"`float` <= 1\.0"):
        load_preset(str(f))
