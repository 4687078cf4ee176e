"""TrainConfig: presets load, overrides are typed by the field, errors name the file and the field."""

import dataclasses
import json
from pathlib import Path

import pytest

from igsearch.config_fields import coerce_value
from igsearch.train.config import ConfigError, TrainConfig, describe_config, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_field_is_documented():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"field {f.name} has no help text"
    assert "ig.beta (a float, default 0.5)" in describe_config()
    assert "scoring.scorer (a string, default 'trunk')" in describe_config()


def test_tiny_preset_loads_and_is_small():
    cfg = load_config(CONFIGS / "tiny-cpu.yaml")
    assert cfg.advantage.method == "ig" and cfg.device == "cpu"
    assert cfg.questions_per_step * cfg.rollout.rollouts_per_question <= 64
    assert cfg.rollout.topk == 3 and cfg.rollout.max_turns == 3


def test_gpu_preset_has_search_r1_settings_and_needs_model_path(tmp_path):
    path = CONFIGS / "qwen2.5-3b-gpu.yaml"
    with pytest.raises(ConfigError, match=r"qwen2.5-3b-gpu.yaml: field 'model_path': not set"):
        load_config(path)
    cfg = load_config(path, ["model_path=/models/Qwen2.5-3B", "train_data=x.parquet"])
    assert cfg.lr == 1e-6 and isinstance(cfg.lr, float)
    assert (cfg.rollout.rollouts_per_question, cfg.rollout.topk, cfg.rollout.max_turns) == (5, 3, 4)
    assert (cfg.loss.clip_low, cfg.loss.clip_high, cfg.loss.kl_coef, cfg.loss.loss_agg) == (0.2, 0.2, 0.001, "token-mean")


def test_overrides_are_typed_by_field():
    cfg = load_config(CONFIGS / "tiny-cpu.yaml", [
        "lr=3e-5", "steps=7", "generation.vllm_enforce_eager=false", "advantage.method=grpo", "ig.clip=none",
        "--rollout.rollouts-per-question=6", "model_path=/x",
    ])
    assert cfg.lr == 3e-5 and cfg.steps == 7 and cfg.generation.vllm_enforce_eager is False
    assert cfg.advantage.method == "grpo" and cfg.method_options("ig").clip is None
    assert cfg.rollout.rollouts_per_question == 6
    assert cfg.model_path == "/x"


def test_coerce_lists_and_optionals():
    assert coerce_value("1,2,3", list[int]) == [1, 2, 3]
    assert coerce_value("[1, 2]", list[int]) == [1, 2]
    assert coerce_value([1.0, "2"], list[float]) == [1.0, 2.0]
    assert coerce_value("null", int | None) is None
    assert coerce_value("1e-6", float) == 1e-6


def test_type_error_names_file_and_field(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("model_path: m\nlr: abc\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert str(e.value) == f"{bad}: field 'lr': expected a float, got 'abc'"
    bad.write_text("model_path: m\nsteps: 2.5\n")
    with pytest.raises(ConfigError, match=r"x.yaml: field 'steps': expected an int, got 2.5"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"override 'tensorboard=maybe': field 'tensorboard': expected a bool"):
        load_config(None, ["model_path=m", "tensorboard=maybe"])


def test_unknown_field_lists_close_matches(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("model_path: m\nrollout:\n  rollouts_per_questions: 5\n")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown field 'rollout.rollouts_per_questions'; did you mean "
                                          r"'rollout.rollouts_per_question'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown field 'loss.klcoef'; did you mean 'loss.kl_coef'"):
        load_config(None, ["model_path=m", "loss.klcoef=0.1"])
    with pytest.raises(ConfigError, match="unknown field 'lrr'; did you mean 'lr'"):
        load_config(None, ["model_path=m", "lrr=0.1"])


def test_value_checks_and_malformed_input(tmp_path):
    with pytest.raises(ConfigError, match="field 'loss.loss_agg': expected one of"):
        load_config(None, ["model_path=m", "loss.loss_agg=mean"])
    with pytest.raises(ConfigError, match="field 'rollout.rollouts_per_question'"):
        load_config(None, ["model_path=m", "rollout.rollouts_per_question=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["lr"])
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_save_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "tiny-cpu.yaml", ["lr=2e-5", "ig.clip=none"])
    cfg.save(tmp_path / "c.yaml")
    cfg.save(tmp_path / "c.json")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert json.loads((tmp_path / "c.json").read_text()) == cfg.to_dict()
    assert TrainConfig.from_dict(json.loads((tmp_path / "c.json").read_text())) == cfg
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_sections_are_owned_by_their_modules_and_spelt_one_way(tmp_path):
    """A section field is ``section.field`` in an override and dotted or nested in a file; a flat name in
    an override is an error naming today's spelling."""
    from igsearch.algo.advantages import AdvantageConfig
    from igsearch.algo.loss import LossConfig
    from igsearch.ig.config import IGConfig
    from igsearch.scoring.config import ScoringConfig

    cfg = load_config(None, ["model_path=m", "ig.beta=0.3", "advantage.method=grpo", "loss.loss_agg=seq-mean-token-sum",
                             "scoring.scorer=naive"])
    assert isinstance(cfg.advantage, AdvantageConfig) and isinstance(cfg.loss, LossConfig)
    assert isinstance(cfg.scoring, ScoringConfig) and isinstance(cfg.method_options("ig"), IGConfig)
    assert cfg.advantage.method == "grpo" and cfg.method_options("ig").beta == 0.3 and cfg.scoring.scorer == "naive"
    assert cfg.loss.loss_agg == "seq-mean-token-sum"
    for flat in ("method", "ig_beta", "topk", "kl_coef", "ig"):  # one name per field in code
        assert not hasattr(cfg, flat)
    with pytest.raises(AttributeError, match="it is ig.beta"):
        cfg.ig_beta = 0.9  # a slotless dataclass would accept it silently; TrainConfig refuses
    cfg.advantage.method = "rloo"
    assert cfg.advantage.method == "rloo"
    for old, new in (("method=grpo", "advantage.method"), ("ig_beta=0.3", "ig.beta"), ("ig.ig_scorer=tree", "scoring.scorer"),
                     ("topk=2", "rollout.topk")):
        with pytest.raises(ConfigError, match=f"override '{old}': unknown field '{old.split('=')[0]}'; it is '{new}' now"):
            load_config(None, ["model_path=m", old])
    nested = tmp_path / "nested.yaml"
    nested.write_text("model_path: m\nig:\n  beta: 0.7\nadvantage:\n  method: igpo\nloss.kl_coef: 0.01\n")
    loaded = load_config(nested)
    assert (loaded.method_options("ig").beta, loaded.advantage.method, loaded.loss.kl_coef) == (0.7, "igpo", 0.01)
    assert "advantage:" in (cfg.save(tmp_path / "saved.yaml")).read_text()  # saved nested
    with pytest.raises(ConfigError, match="field 'ig.norm': expected one of"):
        load_config(None, ["model_path=m", "ig.norm=sideways"])
    with pytest.raises(ConfigError, match="unknown field 'advantage.nope'"):
        load_config(None, ["model_path=m", "advantage.nope=1"])
    with pytest.raises(ConfigError, match="unknown field 'advantage.options'"):  # filled by the run, not by a file
        load_config(None, ["model_path=m", "advantage.options=1"])


def test_files_of_older_versions_load_through_one_migration_that_warns_once(tmp_path, capsys):
    """Flat section fields, IG-Search's stuttering names, knobs under ``advantage`` and the ``methods:``
    holder of older files map to today's fields, with one line on stderr naming the new spellings; a
    file igsearch writes today carries ``config_version`` and is read without it."""
    from igsearch.methods.gigpo import GiGPOConfig

    flat = {"model_path": "m", "ig_beta": 0.2, "loss_agg": "token-mean", "method": "ig", "lr": 0.5, "ig_scorer": "tree",
            "tokenizer_path": None}
    old = TrainConfig.from_dict(flat, source="old/config.json")
    assert (old.method_options("ig").beta, old.lr, old.scoring.scorer) == (0.2, 0.5, "tree")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("old/config.json: written by an older igsearch")
    assert "ig_beta -> ig.beta" in err[0] and "ig_scorer -> scoring.scorer" in err[0] and "method -> advantage.method" in err[0]
    TrainConfig.from_dict(flat, source="old/config.json")
    assert capsys.readouterr().err == ""  # once per file
    v1 = tmp_path / "v1.yaml"
    v1.write_text("model_path: m\nig:\n  ig_beta: 0.1\n  ig_clip: null\n  ig_answer_tokens: separate\n"
                  "advantage:\n  method: igpo\n  igpo_gamma: 0.7\nmethods:\n  gigpo:\n    omega: 0.3\n")
    cfg = load_config(v1)
    assert (cfg.method_options("ig").beta, cfg.method_options("ig").clip, cfg.scoring.answer_tokens) == (0.1, None, "separate")
    assert (cfg.method_options().gamma, cfg.methods["gigpo"]) == (0.7, GiGPOConfig(omega=0.3))
    assert "ig.ig_answer_tokens -> scoring.answer_tokens" in capsys.readouterr().err
    saved = cfg.save(tmp_path / "today.yaml")
    assert "config_version: 2" in saved.read_text()
    again = load_config(saved)  # the run's own method's section is saved, the others keep their defaults
    assert (again.method_options(), again.scoring, again.lr) == (cfg.method_options(), cfg.scoring, cfg.lr)
    assert capsys.readouterr().err == ""
    future = tmp_path / "future.yaml"
    future.write_text("config_version: 99\nmodel_path: m\n")
    with pytest.raises(ConfigError, match="future.yaml: field 'config_version': 99 is not a version"):
        load_config(future)
    today = tmp_path / "strict.yaml"  # a file of today's version is not migrated: an old name there is an error
    today.write_text("config_version: 2\nmodel_path: m\nig_beta: 0.3\n")
    with pytest.raises(ConfigError, match="strict.yaml: unknown field 'ig_beta'; it is 'ig.beta' now"):
        load_config(today)


def test_method_sections_are_named_after_their_method(tmp_path):
    """Every method's knobs, IG-Search's included, are its own section (dotted or nested in YAML), registered
    by its method file and handed to its estimator; only the run's method's section is saved."""
    from igsearch.ig.config import IGConfig
    from igsearch.methods.gigpo import GiGPOConfig

    cfg = load_config(None, ["model_path=m", "advantage.method=gigpo", "gigpo.omega=0.8", "igpo.gamma=0.5"])
    assert cfg.method_options() == GiGPOConfig(omega=0.8) and cfg.method_options("igpo").gamma == 0.5
    assert cfg.method_options("ig") == IGConfig() and cfg.method_options("grpo") is None
    assert cfg.advantage_config().options == GiGPOConfig(omega=0.8)
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("model_path: m\ngigpo:\n  gamma: 0.9\n")
    assert load_config(yaml_file).methods["gigpo"] == GiGPOConfig(gamma=0.9)
    again = TrainConfig.from_dict(cfg.to_dict())  # a checkpoint's config.json round trip: the run's method's section
    assert again.method_options() == cfg.method_options()
    saved = cfg.to_dict()
    assert "gigpo" in saved and not {"ig", "igpo", "methods"} & set(saved)  # no other method's (nor a plug-in's) section
    with pytest.raises(ConfigError, match="unknown field 'nope.x'"):
        TrainConfig.from_dict({"model_path": "m", "methods": {"nope": {"x": 1}}})
    with pytest.raises(ConfigError, match="unknown field 'gigpo.nope'"):
        load_config(None, ["model_path=m", "gigpo.nope=1"])
    with pytest.raises(ConfigError, match="'gigpo.gamma'"):
        load_config(None, ["model_path=m", "gigpo.gamma=2"])
    assert "gigpo.omega (a float, default 1.0)" in describe_config()


def test_only_the_ig_method_and_package_read_igs_section():
    """IG-Search is a method like the others: no module outside ``methods/ig.py`` and ``igsearch/ig/`` reads its
    section (``method_options("ig")``, ``IGConfig``'s fields), and nothing reads a fixed ``cfg.ig``."""
    import re

    import igsearch

    root = Path(igsearch.__file__).parent
    readers = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel == "methods/ig.py" or rel.startswith("ig/") or rel.startswith("integrations/verl/config.py"):
            continue  # verl's algorithm.ig group maps onto IGConfig by field name
        text = path.read_text()
        if re.search(r"method_options\(\"ig\"\)|\bcfg\.ig\b|config\.ig\b|\bIGConfig\b", text):
            readers.append(rel)
    assert readers == []


def test_a_preset_starts_from_its_base(tmp_path):
    """``base:`` loads another preset (relative to this one) first; this one's fields win; a cycle or a
    missing base is one clear error. The demo's presets are built this way."""
    (tmp_path / "a.yaml").write_text("lr: 0.5\nsteps: 7\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nsteps: 9\nig:\n  beta: 0.2\n")
    cfg = load_config(tmp_path / "b.yaml", ["model_path=m"])
    assert (cfg.lr, cfg.steps, cfg.method_options("ig").beta) == (0.5, 9, 0.2)
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="in a cycle"):
        load_config(tmp_path / "b.yaml", ["model_path=m"])
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml: config file not found \\(the base of"):
        load_config(tmp_path / "c.yaml", ["model_path=m"])
    root = Path(__file__).resolve().parents[1] / "configs"
    demo, oracle = (load_config(root / name, ["model_path=m"]) for name in ("demo.yaml", "demo-oracle.yaml"))
    assert (demo.steps, demo.sft_replay_coef, oracle.steps, oracle.sft_replay_coef) == (40, 0.0, 10, 1.0)
    assert demo.rollout.topk == oracle.rollout.topk == 2 and demo.scoring.scorer == load_config(root / "tiny-cpu.yaml", ["model_path=m"]).scoring.scorer


def test_every_config_field_is_read_somewhere():
    """A knob nothing reads is a lie: every TrainConfig field must be accessed as an attribute in the package."""
    import dataclasses
    import re
    from pathlib import Path

    import igsearch
    from igsearch.train.config import TrainConfig
    from igsearch.train.config_legacy import REMOVED_FIELDS

    from igsearch.train.config import config_fields

    root = Path(igsearch.__file__).parent
    sources = [p.read_text() for p in root.rglob("*.py")]
    from igsearch.algo.advantages import estimator_config_classes

    plugins = {m for m, cls in estimator_config_classes().items() if not cls.__module__.startswith("igsearch.")}
    names = [name.split(".")[-1] for name in config_fields() if name.split(".")[0] not in plugins]  # tests' plug-ins
    unread = [n for n in names if not any(re.search(r"\." + n + r"\b", s) for s in sources)]
    assert unread == [] and len(names) > 60
    assert not REMOVED_FIELDS & set(names)
    # a checkpoint written by an older version still loads
    assert TrainConfig.from_dict({"tokenizer_path": None, "lr": 0.5}).lr == 0.5


@pytest.mark.parametrize("override,message", [
    ("lr=inf", "field 'lr': must be a finite number"),
    ("ig.beta=nan", "field 'ig.beta': must be a finite number"),
    ("grad_clip=nan", "field 'grad_clip': must be a finite number"),
    ("generation.engine=foo", "field 'generation.engine': expected one of"),
    ("device=quantum", "field 'device': expected auto, cpu, cuda or cuda:N"),
    ("ig.head_weight=0", "field 'ig.head_weight': must be > 0"),
    ("scoring.max_context_tokens=-5", "field 'scoring.max_context_tokens': must be >= 1"),
])
def test_values_that_would_break_a_run_later_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["model_path=/m", override])


def test_unreadable_config_files_get_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("lr: 1e-4 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text"):
        load_config(bad)
    deep = tmp_path / "deep.yaml"
    deep.write_text("lr: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match=r"deep.yaml: (nested too deeply|not valid YAML)"):
        load_config(deep)


def test_optimizer_choice():
    import torch

    from igsearch.train.trainer import build_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = build_optimizer(params, load_config(CONFIGS / "tiny-cpu.yaml", ["optimizer=sgd", "sgd_momentum=0.5", "lr=0.3"]))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.5 and sgd.defaults["lr"] == 0.3
    assert isinstance(build_optimizer(params, load_config(CONFIGS / "tiny-cpu.yaml")), torch.optim.AdamW)
    with pytest.raises(ConfigError, match="'optimizer'"):
        load_config(CONFIGS / "tiny-cpu.yaml", ["optimizer=adam"])
    with pytest.raises(ConfigError, match="'sgd_momentum'"):
        load_config(CONFIGS / "tiny-cpu.yaml", ["optimizer=sgd", "sgd_momentum=1.0"])
