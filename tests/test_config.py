import json

import pytest

from napari_cellboxify.config import CellBoxifyConfig, ConfigError
from napari_cellboxify.recipes import small_cpu_config


def test_defaults_are_the_papers_values():
    c = CellBoxifyConfig()
    assert c.model.backbone == "resnet50"
    assert c.model.anchor_sizes == (8, 16, 32, 64, 128)
    assert c.model.aspect_ratios == (0.5, 1.0, 2.0, 3.0, 4.0)
    assert c.model.rpn_post_nms_top_n_test == 3000 and c.model.detections_per_img == 2000
    assert c.model.num_vertices == 64
    # gamma multiplies the variance-normalised Chan-Vese energy (1.0 there ~ 0.03 on the raw energy's scale);
    # alpha 4 keeps polygons in their boxes during box-only fine-tuning, delta 4 keeps them from turning concave
    # in long runs (config.py says why)
    assert (c.loss.unary_weight, c.loss.local_weight, c.loss.global_weight) == (4.0, 0.5, 1.0)
    assert c.loss.fill_weight == 4.0 and c.model.clip_polygons_to_box
    assert c.loss.global_normalize
    assert (c.loss.local_kernel, c.loss.local_dilation, c.loss.raster_size, c.loss.inv_smoothness) == (3, 2, 64, 0.1)
    assert c.data.train_sizes == (440, 480, 520, 580, 620)
    assert c.train.lr == 1e-4


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip_through_a_file(tmp_path, suffix):
    c = small_cpu_config(steps=123)
    c.loss.supervision = "mask"
    path = tmp_path / f"c{suffix}"
    c.save(path)
    assert CellBoxifyConfig.load(path) == c


def test_checkpoints_of_earlier_versions_still_load():
    old = CellBoxifyConfig().to_dict()
    del old["loss"]["pairwise_warmup_steps"]
    old["loss"]["pairwise_warmup_fraction"] = 0.11  # written by early checkpoints
    assert CellBoxifyConfig.from_dict(old).loss.pairwise_warmup_steps == 500
    old["loss"]["pairwise_warmup_fractoin"] = 0.1  # a typo is still an error
    with pytest.raises(ConfigError, match="pairwise_warmup_fractoin"):
        CellBoxifyConfig.from_dict(old)


def test_exponent_numbers_read_as_numbers_from_yaml_files_and_overrides(tmp_path):
    from napari_cellboxify.config import apply_overrides

    # PyYAML reads "1e-4" as a string (YAML 1.1 wants "1.0e-4"); a learning rate written so must still work.
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-4\n  steps: 2e3\n")
    c = CellBoxifyConfig.load(path)
    assert (c.train.lr, c.train.steps) == (1e-4, 2000) and isinstance(c.train.steps, int)
    assert apply_overrides(c, ["train.lr=5e-4"]).train.lr == 5e-4
    with pytest.raises(ConfigError, match="train.steps"):
        apply_overrides(c, ["train.steps=2.5e0"])


def test_partial_file_keeps_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 50\nmodel:\n  anchor_sizes: [4, 8, 16, 32, 64]\n")
    c = CellBoxifyConfig.load(path)
    assert c.train.steps == 50 and c.model.anchor_sizes == (4, 8, 16, 32, 64) and c.train.lr == 1e-4


@pytest.mark.parametrize(
    "data, words",
    [
        ({"train": {"stepz": 3}}, "stepz"),
        ({"trian": {}}, "trian"),
        ({"train": {"steps": "many"}}, "train.steps"),
        ({"train": {"steps": 1.5}}, "train.steps"),
        ({"model": {"backbone": "vgg"}}, "backbone"),
        ({"loss": {"supervision": "points"}}, "supervision"),
        ({"loss": {"global_channel": "colour"}}, "global_channel"),
        ({"loss": {"contrast_window": 4}}, "contrast_window"),
        ({"data": {"hflip": "yes"}}, "data.hflip"),
        ({"model": {"refine_passes": 0}}, "model.refine_passes"),
    ],
)
def test_bad_values_name_the_key(data, words):
    with pytest.raises(ConfigError, match=words):
        CellBoxifyConfig.from_dict(data)


def test_unparseable_file_is_a_config_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid"):
        CellBoxifyConfig.load(path)


def test_a_config_survives_json_and_back_unchanged():
    config = small_cpu_config(steps=7, lr_drop_fractions=(0.5,), warmup_steps=3)
    config.model.aspect_ratios, config.model.tta, config.data.crop_size = (0.5, 2.0), "flips", None
    again = CellBoxifyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again != CellBoxifyConfig()


def test_training_run_config_resume_keeps_the_runs_own_config(tmp_path):
    from napari_cellboxify.recipes import training_run_config

    started = CellBoxifyConfig()
    started.train.lr = 3e-4
    started.save(tmp_path / "config.json")
    other = tmp_path / "other.yaml"
    changed = CellBoxifyConfig()
    changed.train.lr = 1e-3
    changed.save(other)

    assert training_run_config(tmp_path, resume=True).train.lr == 3e-4  # resuming never swaps the model
    assert training_run_config(tmp_path, resume=False).train.lr == CellBoxifyConfig().train.lr
    assert training_run_config(tmp_path, other, resume=True).train.lr == 1e-3  # an explicit file wins
    overridden = training_run_config(tmp_path, resume=True, supervision="mask", steps=7)
    assert (overridden.loss.supervision, overridden.train.steps, overridden.train.lr) == ("mask", 7, 3e-4)


def test_overrides_set_one_value_each_and_name_bad_ones():
    from napari_cellboxify.config import ConfigError, apply_overrides

    base = CellBoxifyConfig()
    got = apply_overrides(base, ["loss.unary_weight=2", "data.crop_size=null", "model.backbone=resnet18"])
    assert (got.loss.unary_weight, got.data.crop_size, got.model.backbone) == (2.0, None, "resnet18")
    assert base.loss.unary_weight == CellBoxifyConfig().loss.unary_weight  # the input is left as it was
    # YAML 1.1 reads "off" as false; a text setting takes the word as written
    assert apply_overrides(apply_overrides(base, ["model.tta=flips"]), ["model.tta=off"]).model.tta == "off"
    with pytest.raises(ConfigError, match="model.tta"):
        apply_overrides(base, ["model.tta=yes"])
    for bad, words in (("loss.unary_weight", "section.key=value"), ("nosuch.x=1", "unknown section"),
                       ("loss.nosuch=1", "nosuch"), ("loss.unary_weight=abc", "number")):
        with pytest.raises(ConfigError, match=words):
            apply_overrides(base, [bad])


def test_fine_tuning_keeps_the_weights_architecture_and_takes_todays_losses(tmp_path):
    from napari_cellboxify.checkpoint import save_weights
    from napari_cellboxify.recipes import fine_tune_config, training_run_config
    from napari_cellboxify.model import build_model

    trained = small_cpu_config()  # ResNet-18, narrow heads: not the defaults' architecture
    trained.loss.unary_weight = 1.0  # an old loss setting stored in old weights
    trained.data.clahe_clip_limit = 0.02
    trained.train.lr = 5e-4
    tuned = fine_tune_config(trained)
    assert tuned.model == trained.model and tuned.data == trained.data
    assert tuned.loss == CellBoxifyConfig().loss and tuned.train.lr == 1e-4

    weights = tmp_path / "w.pt"
    save_weights(weights, build_model(trained, load_pretrained=False), trained)
    run = training_run_config(tmp_path / "run", init_weights=weights, steps=5)
    assert run.model.backbone == "resnet18" and run.loss.unary_weight == 4.0 and run.train.steps == 5
    assert training_run_config(tmp_path / "run").model.backbone == "resnet50"  # no --init: the defaults


@pytest.mark.parametrize("name", ["livecell_cpu.yaml", "livecell_gpu.yaml"])
def test_the_shipped_config_files_load_and_validate(name):
    # They are what README's training commands pass; a typo in a key or value must fail here, not in a long run.
    from pathlib import Path

    config = CellBoxifyConfig.load(Path(__file__).resolve().parents[1] / "configs" / name)
    config.validate()
    assert config.model.backbone == "resnet18"
    if name == "livecell_cpu.yaml":
        assert config.train.ema_decay == 0.998 and config.train.lr == 0.0005
