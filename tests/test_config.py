import dataclasses
from pathlib import Path

import pytest

from gtgm.cli import main
from gtgm.config import CONFIG_DIR, Config, list_presets, load_config, with_overrides
from gtgm.errors import ConfigError


def test_defaults_and_presets():
    assert load_config() == Config()
    cfg = load_config("data/default")
    assert cfg.augment.flip_prob == 0.5
    ct = load_config("data/ct-abdomen")  # inherits data/default through _base_
    assert ct.preprocess.ct_window == [-175.0, 250.0]
    assert ct.preprocess.target_spacing == [1.5, 1.5, 2.0]
    assert ct.augment.flip_prob == cfg.augment.flip_prob


def test_overrides_are_typed():
    cfg = load_config(
        None,
        [
            "preprocess.ct_window=[-200, 300]",
            "pretrain.patch_size=[32,32,16]",
            "seed=7",
            "preprocess.target_spacing=null",
            "augment.noise_prob=1",
        ],
    )
    assert cfg.preprocess.ct_window == [-200.0, 300.0]
    assert isinstance(cfg.preprocess.ct_window[0], float)
    assert cfg.pretrain.patch_size == [32, 32, 16]
    assert cfg.seed == 7 and cfg.preprocess.target_spacing is None
    assert cfg.augment.noise_prob == 1.0 and isinstance(cfg.augment.noise_prob, float)


@pytest.mark.parametrize(
    "override, key",
    [
        ("preprocess.ct_windw=[0,1]", "preprocess.ct_windw"),
        ("nosuchsection.x=1", "nosuchsection"),
        ("pretrain.patch_size=abc", "pretrain.patch_size"),
        ("pretrain.patch_size=[1.5,2,3]", "pretrain.patch_size[0]"),
        ("patches.size=[32,32,32]", "patches.size"),  # a section removed from the config (no stage read it)
        ("seed=true", "seed"),
        ("device=tpu", "device"),
        ("finetune.class_shift=-0.1", "finetune.class_shift"),
        ("finetune.patch_size=[48,48,24]", "finetune.patch_size"),  # 5-stage resunet: multiples of 16
        ("finetune.class_shift=.inf", "finetune.class_shift"),
        ("preprocess=3", "preprocess"),
    ],
)
def test_bad_keys_and_types_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'preprocess.ct_window'"):
        load_config(None, ["preprocess.ct_windw=[0,1]"])


def test_bad_override_syntax_and_missing_preset():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["no_equals_sign"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("data/does-not-exist")


def test_yaml_preset_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preprocess:\n  ct_window: [0, 1]\n  bogus: 2\n")
    with pytest.raises(ConfigError, match="preprocess.bogus"):
        load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("_base_: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(loop)


def test_cli_config_errors_exit_nonzero(capsys):
    assert main(["config", "patches.size=abc"]) == 1
    assert "patches.size" in capsys.readouterr().err
    assert main(["config", "--config", "data/ct-abdomen"]) == 0
    assert "ct_window" in capsys.readouterr().out


def test_a_saved_config_with_a_retired_section_still_loads(tmp_path):
    """config.yaml of runs written before the ``patches`` section was removed (no stage read it) still loads."""
    import yaml

    old = Config().to_dict() | {"patches": {"size": [48, 48, 48], "samples_per_epoch": 256}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert load_config(str(tmp_path / "config.yaml")) == Config()


def test_study_group_overrides_and_command_line_precedence():
    from gtgm.config import group_config

    cfg = load_config("finetune/cpu-small", ["finetune.steps=7"])
    em = group_config(cfg, "em_synthetic")
    assert em.finetune.task == "em" and em.finetune.patch_size == [64, 64, 16] and em.finetune.steps == 300
    assert group_config(cfg, "ct_phantom").finetune.task == "segmentation"
    assert group_config(cfg, "em_synthetic", ["finetune.steps=7"]).finetune.steps == 7  # the command line wins
    with pytest.raises(ConfigError, match="finetune.stepz"):
        with_overrides(cfg, ["finetune.stepz=3"])


def test_replacing_a_preset_mapping_warns_which_entries_it_drops(capsys):
    whole = load_config("study/cpu-label-limited", ["study.arm_overrides={mae: []}"])
    assert whole.study.arm_overrides == {"mae": []}
    out = capsys.readouterr()
    assert "[config] warning" in out.err and "supervised" in out.err and "study.arm_overrides.ENTRY=VALUE" in out.err
    assert out.out == ""  # `gtgm config > preset.yaml` stays valid YAML
    one = load_config("study/cpu-label-limited", ["study.arm_overrides.mae=[]"])
    assert one.study.arm_overrides["mae"] == [] and one.study.arm_overrides["supervised"]
    assert "warning" not in capsys.readouterr().err


def test_a_whole_section_override_sets_keys_and_keeps_the_rest(capsys):
    preset = load_config("pretrain/cpu-small")
    cfg = load_config("pretrain/cpu-small", ["pretrain={steps: 3}"])
    assert cfg.pretrain.steps == 3
    assert dataclasses.replace(cfg.pretrain, steps=preset.pretrain.steps) == preset.pretrain
    assert with_overrides(preset, ["pretrain={steps: 3}"]).pretrain == cfg.pretrain
    assert "warning" not in capsys.readouterr().err


def test_the_study_runs_real_ct_with_the_real_ct_recipe():
    """cpu-small's study.group_presets gives real_ct_organs the recipe of finetune/cpu-real-ct (its model, finetune
    and seg_augment sections), while the run's own cache / out / pretrained stay; the demo shortens it only."""
    from dataclasses import asdict

    from gtgm.config import group_config, with_overrides

    base = with_overrides(load_config("finetune/cpu-small"), values={"finetune.cache": "C", "finetune.out": "O"})
    preset = load_config("finetune/cpu-real-ct")
    study = group_config(base, "real_ct_organs")
    for section in ("model", "seg_augment"):
        assert asdict(getattr(study, section)) == asdict(getattr(preset, section))
    got, want = asdict(study.finetune), asdict(preset.finetune)
    assert (got.pop("cache"), got.pop("out"), want.pop("cache"), want.pop("out")) == ("C", "O", "", "runs/finetune")
    assert got == want and study.model.ct_windows and study.finetune.body_crop
    assert asdict(group_config(base, "ct_phantom").model) == asdict(base.model)  # other groups keep cpu-small's
    demo = asdict(group_config(load_config("demo"), "real_ct_organs").finetune)
    shorter = {k for k, v in demo.items() if v != asdict(preset.finetune)[k]}
    assert shorter <= {"steps", "val_every", "checkpoint_every"}, shorter


def test_every_preset_loads_and_fits_its_networks():
    presets = sorted(CONFIG_DIR.rglob("*.yaml"))
    assert len(presets) > 20
    for path in presets:
        cfg = load_config(str(path))  # patch sizes are checked against the network here
        assert cfg.model.encoder in ("resunet", "swinunetr", "resenc"), path


def test_presets_ship_in_the_package_and_are_listed(capsys):
    """The presets are package data (a wheel has them) and `gtgm config --list` names each with its header line."""
    import tomllib

    assert CONFIG_DIR.is_relative_to(Path(__file__).parents[1] / "src" / "gtgm")
    patterns = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["gtgm"]
    shipped = {p for pattern in patterns if pattern.startswith("presets/") for p in CONFIG_DIR.parent.glob(pattern)}
    assert shipped == set(CONFIG_DIR.rglob("*.yaml")) and len(shipped) > 30
    assert main(["config", "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(shipped) == len(list_presets())
    line = next(x for x in out if x.startswith("finetune/cpu-small "))
    assert "Fine-tuning on 2 CPU cores" in line
    # a base preset's shared settings reach the presets that extend it; the task's own settings win
    spleen, prostate = load_config("finetune/msd-task09-spleen"), load_config("finetune/msd-task05-prostate")
    assert spleen.finetune.steps == prostate.finetune.steps == 30000 and spleen.model.feature_size == 48
    assert spleen.finetune.patch_size == [96, 96, 96] and prostate.finetune.patch_size == [160, 160, 32]


def test_a_wheel_holds_every_preset_and_finds_them_installed(tmp_path):
    """Built as a wheel and installed elsewhere (no source tree), gtgm lists and loads its presets."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).parents[1]
    src = tmp_path / "src"
    shutil.copytree(root / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "w"), str(src)], check=True
    )
    wheel = next((tmp_path / "w").glob("gtgm-*.whl"))
    names = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("gtgm/presets/")}
    assert names == {f"gtgm/presets/{p.relative_to(CONFIG_DIR).as_posix()}" for p in CONFIG_DIR.rglob("*.yaml")}
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True)
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}
    where = [sys.executable, "-c", "import gtgm.config as c; print(c.CONFIG_DIR)"]
    assert subprocess.run(where, cwd=tmp_path, env=env, capture_output=True, text=True).stdout.startswith(
        env["PYTHONPATH"]
    )
    run = [sys.executable, "-m", "gtgm", "config"]
    listed = subprocess.run([*run, "--list"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert len(listed.stdout.splitlines()) == len(names)
    loaded = subprocess.run([*run, "--config", "finetune/cpu-small"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    assert "patch_size" in loaded.stdout


def test_a_float_written_without_a_dot_is_a_number():
    """YAML 1.1 reads 3e-5 as a string; a float key takes it as 3e-5, an int key and a word are still refused."""
    cfg = load_config(None, ["finetune.weight_decay=3e-5", "pretrain.lr=1E-4"])
    assert cfg.finetune.weight_decay == 3e-5 and cfg.pretrain.lr == 1e-4
    for bad in ("finetune.weight_decay=abc", "finetune.steps=3e2"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(None, [bad])
