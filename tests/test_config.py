"""TrainConfig: presets load, overrides are typed by the field, errors name the file and the field."""

import dataclasses
import json
from pathlib import Path

import pytest

from igsearch.train.config import ConfigError, TrainConfig, coerce_value, describe_config, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_field_is_documented():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"field {f.name} has no help text"
    assert "ig_beta" in describe_config()


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
        "lr=3e-5", "steps=7", "vllm_enforce_eager=false", "method=grpo", "ig_clip=none",
        "--rollouts-per-question=6", "model_path=/x",
    ])
    assert cfg.lr == 3e-5 and cfg.steps == 7 and cfg.generation.vllm_enforce_eager is False
    assert cfg.advantage.method == "grpo" and cfg.ig.ig_clip is None and cfg.rollout.rollouts_per_question == 6
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
    bad.write_text("model_path: m\nrollouts_per_questions: 5\n")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown field 'rollouts_per_questions'; did you mean 'rollouts_per_question'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown field 'klcoef'; did you mean 'kl_coef'"):
        load_config(None, ["model_path=m", "klcoef=0.1"])


def test_value_checks_and_malformed_input(tmp_path):
    with pytest.raises(ConfigError, match="field 'loss_agg': expected one of"):
        load_config(None, ["model_path=m", "loss_agg=mean"])
    with pytest.raises(ConfigError, match="field 'rollouts_per_question'"):
        load_config(None, ["model_path=m", "rollouts_per_question=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["lr"])
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_save_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "tiny-cpu.yaml", ["lr=2e-5", "ig_clip=none"])
    cfg.save(tmp_path / "c.yaml")
    cfg.save(tmp_path / "c.json")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert json.loads((tmp_path / "c.json").read_text()) == cfg.to_dict()
    assert TrainConfig.from_dict(json.loads((tmp_path / "c.json").read_text())) == cfg
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_sections_are_owned_by_their_modules_and_named_flat_or_dotted(tmp_path):
    from igsearch.algo.advantages import AdvantageConfig
    from igsearch.algo.loss import LossConfig
    from igsearch.ig.config import IGConfig

    cfg = load_config(None, ["model_path=m", "ig_beta=0.3", "method=grpo", "loss.loss_agg=seq-mean-token-sum",
                             "ig_scorer=naive"])
    assert isinstance(cfg.advantage, AdvantageConfig) and isinstance(cfg.loss, LossConfig) and isinstance(cfg.ig, IGConfig)
    assert cfg.advantage.method == "grpo" and cfg.ig.ig_beta == 0.3 and cfg.ig.ig_scorer == "naive"
    assert cfg.loss.loss_agg == "seq-mean-token-sum"
    # one name per field in code: the flat input names are no attributes of the config
    for flat in ("method", "ig_beta", "topk", "kl_coef"):
        assert not hasattr(cfg, flat)
    with pytest.raises(AttributeError):
        cfg.ig_beta = 0.9  # a slotless dataclass would accept it silently; TrainConfig refuses
    cfg.advantage.method = "rloo"
    assert cfg.advantage.method == "rloo"
    nested = tmp_path / "nested.yaml"
    nested.write_text("model_path: m\nig:\n  ig_beta: 0.7\nadvantage:\n  method: igpo\nkl_coef: 0.01\n")
    loaded = load_config(nested)
    assert (loaded.ig.ig_beta, loaded.advantage.method, loaded.loss.kl_coef) == (0.7, "igpo", 0.01)
    assert "advantage:" in (cfg.save(tmp_path / "saved.yaml")).read_text()  # saved nested
    # a flat config.json written before the sections existed still loads
    flat = {"model_path": "m", "ig_beta": 0.2, "loss_agg": "token-mean", "method": "ig", "lr": 0.5}
    old = TrainConfig.from_dict(flat)
    assert (old.ig.ig_beta, old.lr) == (0.2, 0.5)
    with pytest.raises(ConfigError, match="field 'ig_norm': expected one of"):
        load_config(None, ["model_path=m", "ig.ig_norm=sideways"])
    with pytest.raises(ConfigError, match="unknown field 'advantage.nope'"):
        load_config(None, ["model_path=m", "advantage.nope=1"])


def test_method_sections_are_named_after_their_method_and_old_names_still_load(tmp_path):
    """GiGPO's and IGPO's knobs are their own sections (dotted or nested in YAML), handed to their
    estimators; the names of older versions (flat ``gigpo_omega``, ``advantage.ig_beta``, nested
    under ``advantage:`` in a checkpoint's config.json) load into them."""
    from igsearch.methods.gigpo import GiGPOConfig

    cfg = load_config(None, ["model_path=m", "method=gigpo", "gigpo.omega=0.8", "igpo.gamma=0.5"])
    assert cfg.method_options() == GiGPOConfig(omega=0.8) and cfg.method_options("igpo").gamma == 0.5
    assert cfg.method_options("ig") is cfg.ig and cfg.method_options("grpo") is None
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("model_path: m\ngigpo:\n  gamma: 0.9\n")
    assert load_config(yaml_file).methods["gigpo"] == GiGPOConfig(gamma=0.9)
    again = TrainConfig.from_dict(cfg.to_dict())  # a checkpoint's config.json round trip: the run's method's section
    assert again.method_options() == cfg.method_options() and again.ig == cfg.ig
    assert list(cfg.to_dict()["methods"]) == ["gigpo"]  # no other method's (nor a plug-in's) section is saved
    with pytest.raises(ConfigError, match="'methods.nope': the settings of method 'nope', which is not registered"):
        TrainConfig.from_dict({"model_path": "m", "methods": {"nope": {"x": 1}}})
    old = TrainConfig.from_dict({"model_path": "m", "gigpo_omega": 0.3,
                                 "advantage": {"method": "igpo", "igpo_gamma": 0.7, "ig_beta": 0.1}})
    assert (old.methods["gigpo"].omega, old.method_options().gamma, old.ig.ig_beta) == (0.3, 0.7, 0.1)
    assert load_config(None, ["model_path=m", "advantage.ig_clip=1.5"]).ig.ig_clip == 1.5
    with pytest.raises(ConfigError, match="unknown field 'gigpo.nope'"):
        load_config(None, ["model_path=m", "gigpo.nope=1"])
    with pytest.raises(ConfigError, match="'gamma'"):
        load_config(None, ["model_path=m", "gigpo.gamma=2"])
    assert "gigpo.omega (a float, default 1.0)" in describe_config()


def test_a_preset_starts_from_its_base(tmp_path):
    """``base:`` loads another preset (relative to this one) first; this one's fields win; a cycle or a
    missing base is one clear error. The demo's presets are built this way."""
    (tmp_path / "a.yaml").write_text("lr: 0.5\nsteps: 7\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nsteps: 9\nig:\n  ig_beta: 0.2\n")
    cfg = load_config(tmp_path / "b.yaml", ["model_path=m"])
    assert (cfg.lr, cfg.steps, cfg.ig.ig_beta) == (0.5, 9, 0.2)
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="in a cycle"):
        load_config(tmp_path / "b.yaml", ["model_path=m"])
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml: config file not found \\(the base of"):
        load_config(tmp_path / "c.yaml", ["model_path=m"])
    root = Path(__file__).resolve().parents[1] / "configs"
    demo, oracle = (load_config(root / name, ["model_path=m"]) for name in ("demo.yaml", "demo-oracle.yaml"))
    assert (demo.steps, demo.sft_replay_coef, oracle.steps, oracle.sft_replay_coef) == (40, 0.0, 10, 1.0)
    assert demo.rollout.topk == oracle.rollout.topk == 2 and demo.ig.ig_scorer == load_config(root / "tiny-cpu.yaml", ["model_path=m"]).ig.ig_scorer


def test_every_config_field_is_read_somewhere():
    """A knob nothing reads is a lie: every TrainConfig field must be accessed as an attribute in the package."""
    import dataclasses
    import re
    from pathlib import Path

    import igsearch
    from igsearch.train.config import REMOVED_FIELDS, TrainConfig

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
    ("ig_beta=nan", "field 'ig_beta': must be a finite number"),
    ("grad_clip=nan", "field 'grad_clip': must be a finite number"),
    ("engine=foo", "field 'engine': expected one of"),
    ("device=quantum", "field 'device': expected auto, cpu, cuda or cuda:N"),
    ("ig_head_weight=0", "field 'ig_head_weight': must be > 0"),
    ("ig_max_context_tokens=-5", "field 'ig_max_context_tokens': must be >= 1"),
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
