"""Task-spec validation (errors name the field) and registries (complete on import)."""

import subprocess
import sys
import textwrap

import pytest
import yaml

from mmbench.core.errors import MMBenchError, SpecError
from mmbench.data.tasks import get_task, load_task_spec, parse_task_spec, task_names

VALID = yaml.safe_load(textwrap.dedent("""
    name: demo
    dataset: {name: synthetic, options: {interaction: unique}}
    splits: {train: train, validation: val, test: test}
    modalities: [m0, m1]
    target: {type: binary, num_classes: 2}
    metrics:
      - {name: accuracy, higher_is_better: true}
      - {name: f1_macro, higher_is_better: true}
    primary_metric: accuracy
    missing: {seed: 0, conditions: [clean, drop-each, rate:0.5, patterns]}
"""))


def _with(**changes):
    spec = {**VALID}
    for key, value in changes.items():
        spec[key] = value
    return spec


def test_valid_spec_parses_and_expands_conditions():
    spec = parse_task_spec(VALID)
    assert spec.primary.higher_is_better
    assert [c.name for c in spec.conditions()] == [
        "clean", "drop:m0", "drop:m1", "rate:0.5", "pattern:m0+m1", "pattern:m0", "pattern:m1"]


@pytest.mark.parametrize("changes, field", [
    ({"primary_metric": "f1"}, "primary_metric"),
    ({"target": {"type": "multiclass"}}, "target.num_classes"),
    ({"target": {"type": "ordinal", "num_classes": 3}}, "target.type"),
    ({"metrics": [{"name": "accuracy"}]}, "metrics.0.higher_is_better"),
    ({"metrics": [{"name": "nonsense", "higher_is_better": True}], "primary_metric": "nonsense"}, "metrics.0.name"),
    ({"metrics": [{"name": "mae", "higher_is_better": False}], "primary_metric": "mae"}, "metrics.0.name"),
    ({"metrics": [{"name": "accuracy", "higher_is_better": False}]}, "metrics.0.higher_is_better"),
    ({"modalities": []}, "modalities"),
    ({"modalities": ["m0", "m0"]}, "modalities"),
    ({"target": {"type": "binary", "num_classes": 3}}, "target.num_classes"),
    ({"target": {"type": "binary", "num_classes": 2, "class_names": ["a"]}}, "target.class_names"),
    ({"target": {"type": "binary", "num_classes": 2, "class_names": ["a", "a"]}}, "target.class_names"),
    ({"target": {"type": "regression", "num_classes": 2}, "metrics": [{"name": "mae", "higher_is_better": False}],
      "primary_metric": "mae"}, "target.num_classes"),
    ({"dataset": {"name": "synthetic", "options": {"num_classes": 3}}}, "dataset.options.num_classes"),
    ({"dataset": {"name": "hf", "options": {"class_names": ["a", "b"]}}}, "dataset.options.class_names"),
    ({"dataset": {"name": "hf", "options": {"splits": {"test": "test"}}}}, "dataset.options.splits"),
    ({"name": "Bad Name!"}, "name"),
    ({"splits": {"train": "train"}}, "splits.test"),
    ({"missing": {"conditions": ["drop:smell"]}}, "missing.conditions"),
    ({"colour": "blue"}, "colour"),
])
def test_invalid_spec_names_the_field(changes, field):
    with pytest.raises(SpecError) as err:
        parse_task_spec(_with(**changes), "demo.yaml")
    message = str(err.value)
    assert message.startswith(f"demo.yaml: {field}: "), message
    assert "\n" not in message


@pytest.mark.parametrize("changes, line", [
    ({"target": {"type": "binary", "num_classes": 2, "clas_names": ["a", "b"]}},
     "demo.yaml: target.clas_names: unknown field; did you mean 'class_names'?"),
    ({"missing": {"sed": 1}}, "demo.yaml: missing.sed: unknown field; did you mean 'seed'?"),
    ({"metrics": [{"name": "accuracy", "higher_is_better": True, "higher_is_beter": 1}]},
     "demo.yaml: metrics.0.higher_is_beter: unknown field; did you mean 'higher_is_better'?"),
    ({"splits": {"train": "train", "tset": "test"}}, "demo.yaml: splits.tset: unknown field; did you mean 'test'?"),
    ({"metrics": [{"name": "acuracy", "higher_is_better": True}], "primary_metric": "acuracy"},
     "demo.yaml: metrics.0.name: unknown metric 'acuracy'; did you mean 'accuracy'?"),
    ({"target": {"type": "binary", "num_classes": "TODO: 2 for a binary target"}},
     "demo.yaml: target.num_classes: still a TODO, fill it in: TODO: 2 for a binary target"),
])
def test_unknown_keys_name_the_nearest_field_and_todos_are_refused(changes, line):
    with pytest.raises(SpecError) as err:
        parse_task_spec(_with(**changes), "demo.yaml")
    assert str(err.value).startswith(line), str(err.value)


def test_spec_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_task_spec(bad)
    bad.write_bytes(b"\xff\xfe name: x")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_task_spec(bad)
    with pytest.raises(SpecError, match="not found"):
        load_task_spec(tmp_path / "absent.yaml")
    bad.write_text("- a list\n")
    with pytest.raises(SpecError, match="mapping"):
        load_task_spec(bad)


def test_builtin_tasks_load_and_unknown_lists_known():
    names = task_names()
    for name in ["synthetic-redundant", "synthetic-unique", "synthetic-synergy"]:
        assert name in names
        assert get_task(name).source.endswith(f"{name}.yaml")
    with pytest.raises(MMBenchError, match="unknown task 'nope'; known: .*synthetic-synergy"):
        get_task("nope")


def test_registries_are_complete_in_a_fresh_interpreter():
    """Importing mmbench alone (nothing else) makes every built-in available."""
    code = ("import mmbench; print(mmbench.FUSIONS.names()); print(mmbench.DATASETS.names()); "
            "print(mmbench.ENCODERS.names()); print(sorted(mmbench.METRICS)[:3])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    fusions, datasets, encoders = (eval(line) for line in out.splitlines()[:3])
    assert {"concat", "add", "attention", "gnn"} <= set(fusions)
    assert "synthetic" in datasets
    assert {"mlp", "cnn", "gru"} <= set(encoders)


def test_unknown_name_lists_known_and_duplicates_refused():
    from mmbench.core.registry import FUSIONS, Registry

    with pytest.raises(MMBenchError, match="unknown fusion 'nope'; known: .*concat"):
        FUSIONS.get("nope")
    reg = Registry("widget")
    reg.register("a", int)
    with pytest.raises(MMBenchError, match="already registered"):
        reg.register("a", str)


def test_task_path_extension(tmp_path, monkeypatch):
    import mmbench.data.tasks as tasks

    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(_with(name="extra-task")))
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(_with(name="broken-task", primary_metric="f1")))
    monkeypatch.setenv("MMBENCH_TASKS_PATH", str(tmp_path))
    tasks._all_specs.cache_clear()
    try:
        with pytest.warns(UserWarning, match="broken.yaml: primary_metric"):
            assert "extra-task" in task_names() and "broken-task" not in task_names()
        with pytest.raises(SpecError, match="broken.yaml: primary_metric: 'f1' is not in metrics"):
            get_task("broken-task")
    finally:
        monkeypatch.delenv("MMBENCH_TASKS_PATH")
        tasks._all_specs.cache_clear()
