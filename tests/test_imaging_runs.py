"""Training on images: the small CNN and MONAI's networks, personalization on them (FedBN, FedPer,
Ditto, fine-tuning), segmentation's metrics, and `fedcare simulate` on manifests and synthetic-scans."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("monai")
pytest.importorskip("PIL")

import torch
from conftest import run_cli
from test_imaging import write_scans

import fedcare
from fedcare.core.config import ModelSpec
from fedcare.core.errors import ConfigError
from fedcare.data import InputShape
from fedcare.learning import make_task
from fedcare.learning.metrics import segmentation_metrics
from fedcare.learning.models import (
    batch_norm_names,
    build_model,
    head_names,
    initial_model,
)

SMALL = {"image_size": [16, 16], "rounds": 2, "batch_size": 8, "optimizer": "adam", "lr": 0.003}


@pytest.fixture
def manifest(tmp_path):
    return write_scans(tmp_path / "scans", sites=2, per_site=16)


def test_segmentation_metrics_by_hand():
    mask = np.array([[[0, 1, 1], [2, 2, 0]]])
    pred = np.array([[[0, 1, 0], [2, 1, 0]]])
    m = segmentation_metrics(mask, pred, 3)
    assert m["dice_1"] == pytest.approx(2 * 1 / (2 + 2)) and m["iou_1"] == pytest.approx(1 / 3)
    assert m["dice_2"] == pytest.approx(2 * 1 / (2 + 1)) and m["iou_2"] == pytest.approx(1 / 2)
    assert m["dice"] == pytest.approx((0.5 + 2 / 3) / 2) and m["voxel_accuracy"] == pytest.approx(4 / 6)
    assert segmentation_metrics(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int), 2)["dice"] is None


def test_the_segmentation_loss_is_monai_dice_plus_cross_entropy():
    from monai.losses import DiceCELoss

    task = make_task("segmentation", ("background", "class 1"))
    out = torch.randn(2, 2, 8, 8)
    mask = (torch.rand(2, 8, 8) > 0.7).long()
    expected = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)(out, mask.unsqueeze(1))
    assert torch.equal(task.loss(out, {"mask": mask}), expected)
    perfect = torch.stack([1 - mask, mask], 1).float() * 20 - 10
    assert task.loss(perfect, {"mask": mask}) < 0.05 < task.loss(-perfect, {"mask": mask})


@pytest.mark.parametrize("name,task,shape,out", [
    ("cnn", "binary", (1, 32, 32), (2, 1)),
    ("cnn", "multiclass", (3, 16, 16, 16), (2, 3)),
    ("densenet121", "binary", (1, 32, 32), (2, 1)),
    ("resnet18", "binary", (1, 32, 32), (2, 1)),
    ("unet", "segmentation", (1, 32, 32), (2, 3, 32, 32)),
    ("basicunet", "segmentation", (1, 32, 32), (2, 3, 32, 32)),
])
def test_image_networks_by_name(name, task, shape, out):
    classes = {"binary": ("a", "b"), "multiclass": ("a", "b", "c"),
               "segmentation": ("background", "class 1", "class 2")}[task]
    inputs = {"image": InputShape("image", shape)}
    model = build_model(ModelSpec(image_model=name), inputs, make_task(task, classes))
    model.eval()
    with torch.no_grad():
        assert tuple(model({"image": torch.randn(2, *shape)}).shape) == out
    assert batch_norm_names(model), "FedBN needs batch norm"
    assert head_names(model)


def test_images_fuse_with_a_table_and_wrong_pairings_are_refused():
    inputs = {"image": InputShape("image", (1, 16, 16)), "tabular": InputShape("tabular", (5,))}
    model = build_model(ModelSpec(model="mlp", hidden=(8,)), inputs, make_task("binary", ("0", "1")))
    assert model({"image": torch.randn(3, 1, 16, 16), "tabular": torch.randn(3, 5)}).shape == (3, 1)
    seg = make_task("segmentation", ("background", "class 1"))
    with pytest.raises(ConfigError, match="one image input"):
        build_model(ModelSpec(), inputs, seg)
    with pytest.raises(ConfigError, match="not a segmentation network"):
        build_model(ModelSpec(image_model="cnn"), {"image": inputs["image"]}, seg)
    with pytest.raises(ConfigError, match="needs an image input"):
        build_model(ModelSpec(image_model="cnn"), {"tabular": inputs["tabular"]}, make_task("binary", ("0", "1")))


def test_the_initial_image_model_is_the_same_everywhere():
    inputs = {"image": InputShape("image", (1, 16, 16))}
    task = make_task("binary", ("0", "1"))
    a, b = (initial_model(lambda i, t: build_model(ModelSpec(), i, t), inputs, task, 7) for _ in range(2))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_fedbn_keeps_the_cnn_batch_norm_at_each_site(manifest, tmp_path):
    run = fedcare.simulate(images=str(manifest), personalization="fedbn", baselines=False, out=str(tmp_path / "r"),
                           **SMALL)
    bn = [n for n in run.global_params if "running_mean" in n]
    assert bn
    sites = list(run.site_params)
    assert len(sites) == 2
    for name in bn:  # each site its own statistics; the global model's never trained from them
        assert not np.array_equal(run.site_params[sites[0]][name], run.site_params[sites[1]][name])
    conv = "images.image.0.weight"
    np.testing.assert_array_equal(run.site_params[sites[0]][conv], run.site_params[sites[1]][conv])
    assert run.summary["personalized"]["mean"]["accuracy"] is not None


@pytest.mark.parametrize("mode", ["fedper", "ditto", "finetune"])
def test_personalization_modes_run_on_the_cnn(mode, manifest, tmp_path):
    run = fedcare.simulate(images=str(manifest), personalization=mode, baselines=False, out=str(tmp_path / mode),
                           **SMALL)
    a, b = (run.site_params[s] for s in run.site_params)
    assert not np.array_equal(a["head.weight"], b["head.weight"])  # each site's own head
    if mode == "fedper":  # the shared body is the global one
        np.testing.assert_array_equal(a["images.image.0.weight"], run.global_params["images.image.0.weight"])
    else:
        assert not np.array_equal(a["images.image.0.weight"], run.global_params["images.image.0.weight"])
    assert set(run.summary["personalized"]["sites"]) == set(run.site_params)


def test_image_runs_are_deterministic(manifest, tmp_path):
    first = fedcare.simulate(images=str(manifest), out=str(tmp_path / "a"), **SMALL)
    second = fedcare.simulate(images=str(manifest), out=str(tmp_path / "b"), **SMALL)
    assert (tmp_path / "a" / "metrics.jsonl").read_bytes() == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    for name, value in first.global_params.items():
        np.testing.assert_array_equal(value, second.global_params[name])


def test_binary_segmentation_learns_on_a_manifest(manifest, tmp_path):
    run = fedcare.simulate(images=str(manifest), task="segmentation", personalization="fedbn",
                           out=str(tmp_path / "s"), **{**SMALL, "rounds": 4, "local_epochs": 5, "lr": 0.01})
    s = run.summary
    for model in ("local", "federated", "personalized", "pooled"):
        assert set(s[model]["sites"]) == {"site-1", "site-2"}
        assert s[model]["mean"]["dice"] is not None and "iou" in s[model]["mean"]
    assert s["pooled"]["mean"]["dice"] > 0.3  # bright squares on noise: learnt in 4 rounds


def test_cli_simulate_on_a_manifest_prints_the_four_columns(manifest, tmp_path):
    proc = run_cli("simulate", "--images", str(manifest), "--image-size", "16", "--image-size", "16", "--rounds", "1",
                   "--personalization", "fedbn", "--out", "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for word in ("site-1", "site-2", "local", "federated", "personali", "pooled", "worst"):
        assert word in proc.stdout, word
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert f"images: {manifest}" in config


def test_cli_refuses_a_bad_image_in_one_line(manifest, tmp_path):
    (manifest.parent / "img" / "s1-2.png").write_bytes(b"")
    proc = run_cli("simulate", "--images", str(manifest), "--rounds", "1", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "s1-2.png" in lines[0] and "--skip-bad-images" in lines[0]


def test_synthetic_scans_is_generated_once_deterministically_and_says_it_is_synthetic(tmp_path, monkeypatch):
    from fedcare.data import synthetic_scans

    monkeypatch.setenv("FEDCARE_CACHE", str(tmp_path / "cache"))
    manifest = synthetic_scans.ensure()
    again = synthetic_scans.ensure(seed=synthetic_scans.SEED)
    assert manifest == again and manifest.parent.name.startswith("synthetic-scans")
    rows = manifest.read_text().splitlines()
    assert rows[0] == "path,mask,label,site,patient" and len(rows) == 1 + 4 * synthetic_scans.IMAGES_PER_SITE
    other = tmp_path / "other"
    monkeypatch.setenv("FEDCARE_CACHE", str(other))
    copy = synthetic_scans.ensure()
    for line in rows[1:40:7]:
        path = line.split(",")[0]
        assert (manifest.parent / path).read_bytes() == (copy.parent / path).read_bytes()
    from fedcare.data.builtin import dataset_info

    info = next(d for d in dataset_info() if d["name"] == "synthetic-scans")
    assert info["description"].startswith("SYNTHETIC") and info["available"]


def test_scanner_shift_is_real_in_the_synthetic_pixels(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDCARE_CACHE", str(tmp_path / "cache"))
    from fedcare.data import DataSpec, load_dataset
    from fedcare.data.imagefiles import read_image

    data = load_dataset(DataSpec(dataset="synthetic-scans", image_size=(32, 32)))
    assert [s.site_id for s in data.sites] == ["scanner-1", "scanner-2", "scanner-3", "scanner-4"]
    means, sizes = [], set()
    for site in data.sites:
        paths = site.splits["train"].columns["image"].paths[:10]
        raw = [read_image(p) for p in paths]
        sizes |= {r.shape for r in raw}
        means.append(np.mean([r.mean() for r in raw]))
    assert len(sizes) == 4  # each scanner its own resolution
    assert max(means) > 1.3 * min(means)  # and its own intensities
    assert json.dumps(data.preprocessing["synthetic"]) == "true"


def test_secure_aggregation_site_dp_and_robust_rules_compose_with_image_models(manifest, tmp_path):
    base = {**SMALL, "rounds": 1, "baselines": False, "images": str(manifest)}
    plain = fedcare.simulate(**base, out=str(tmp_path / "plain"))
    secure = fedcare.simulate(**base, secure_aggregation=True, out=str(tmp_path / "secure"))
    for name, value in plain.global_params.items():  # the masked sum is the sum (to float rounding)
        np.testing.assert_allclose(secure.global_params[name], value, rtol=1e-4, atol=1e-5)
    assert secure.summary["privacy"]["secure_aggregation"] is True
    median = fedcare.simulate(**base, aggregator="median", out=str(tmp_path / "median"))
    assert median.summary["federated"]["mean"]["accuracy"] is not None
    private = fedcare.simulate(**base, site_dp_epsilon=5.0, out=str(tmp_path / "dp"))
    assert private.summary["privacy"]["epsilon"] <= 5.0


def test_record_level_dp_sgd_is_refused_for_batch_norm_image_models(manifest, tmp_path):
    with pytest.raises(ConfigError, match="batch norm"):
        fedcare.simulate(**{**SMALL, "optimizer": "sgd"}, images=str(manifest), dp_epsilon=5.0, out=str(tmp_path / "r"))


def test_fedcare_benchmark_takes_an_image_manifest(manifest, tmp_path):
    config = tmp_path / "images.yaml"
    config.write_text(f"images: {manifest}\nimage_size: [16, 16]\nrounds: 1\nbatch_size: 8\n")
    proc = run_cli("benchmark", "--config", str(config), "--algorithms", "fedavg,fedavg+fedbn", "--seeds", "1",
                   "--workers", "1", "--out", "bench", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "bench" / "table.md").read_text()
    assert "| fedavg |" in table and "| fedavg+fedbn |" in table and "pooled baseline" in table
