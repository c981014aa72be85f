"""Fusion models, the modality mean, reporting by modality, and a site without an input taking part."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedcare.algorithms.aggregators import weighted_mean
from fedcare.algorithms.modalities import modality_mean
from fedcare.algorithms.pieces import RoundContext
from fedcare.core.config import ModelSpec, resolve_config
from fedcare.core.errors import ConfigError
from fedcare.core.update import Update
from fedcare.data.dataset import InputShape
from fedcare.learning.fusion import FusionModel
from fedcare.learning.models import head_names
from fedcare.learning.tasks import make_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

SHAPES = {"tabular": InputShape("tabular", (3,)), "omics": InputShape("omics", (20,))}


def _model(fusion: str, dropout: float = 0.0) -> FusionModel:
    torch.manual_seed(0)
    return FusionModel(ModelSpec(model="fusion", fusion=fusion, hidden=(4,), modality_dropout=dropout), SHAPES,
                       make_task("binary"))


@pytest.mark.parametrize("fusion", ["intermediate", "late"])
def test_fusion_model_masks_absent_inputs(fusion):
    model = _model(fusion).eval()
    names = [k for k in model.state_dict()]
    assert all(k.startswith(("encoders.tabular.", "encoders.omics.", "head.")) for k in names), names
    assert head_names(model) == {k for k in names if k.startswith("head.")}  # FedPer keeps the fusion head
    rng = np.random.default_rng(0)
    batch = {"tabular": torch.tensor(rng.normal(size=(6, 3)), dtype=torch.float32),
             "omics": torch.tensor(rng.normal(size=(6, 20)), dtype=torch.float32),
             "omics.present": torch.tensor([1, 1, 1, 0, 0, 0], dtype=torch.float32)}
    out = model(batch)
    changed = dict(batch, omics=batch["omics"] * torch.tensor([1, 1, 1, 50, -7, 3.0])[:, None])
    after = model(changed)
    assert torch.equal(out[3:], after[3:])  # an absent input's values do not reach the output
    assert not torch.allclose(out[:3], model(dict(batch, omics=batch["omics"] + 1))[:3])  # a present one does
    # without the companion every patient has the input; no patient has it: its encoder gets no gradient
    assert not torch.equal(model({"tabular": batch["tabular"], "omics": batch["omics"]})[3:], out[3:])
    model.train()
    model.zero_grad()
    model(dict(batch, **{"omics.present": torch.zeros(6)})).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.encoders["omics"].parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.encoders["tabular"].parameters())


def test_late_fusion_adds_the_inputs_predictions():
    """Late fusion sums each present input's prediction times its scale (an average would cut each
    encoder's gradient by the number of inputs), so a patient with both inputs gets both effects."""
    model = _model("late").eval()
    rng = np.random.default_rng(1)
    batch = {"tabular": torch.tensor(rng.normal(size=(4, 3)), dtype=torch.float32),
             "omics": torch.tensor(rng.normal(size=(4, 20)), dtype=torch.float32),
             "omics.present": torch.tensor([1, 1, 0, 0], dtype=torch.float32)}
    with torch.no_grad():
        model.head.scale.copy_(torch.tensor([2.0, 0.5]))
        each = {n: model.encoders[n](batch[n]) for n in ("tabular", "omics")}
        out = model(batch)
    assert torch.allclose(out[:2], 2.0 * each["tabular"][:2] + 0.5 * each["omics"][:2])
    assert torch.allclose(out[2:], 2.0 * each["tabular"][2:])  # an absent input adds nothing
    nothing = dict(batch, **{"tabular.present": torch.zeros(4), "omics.present": torch.zeros(4)})
    assert torch.equal(model(nothing), torch.zeros(4, 1))  # a patient with no input answers 0


@pytest.mark.parametrize("fusion", ["intermediate", "late"])
def test_image_encoder_is_regularised(fusion):
    """The CNN memorises a few hundred images: its features are dropped out in training and its
    weights carry an L2 penalty, for the share of the batch that has an image."""
    from fedcare.learning import fusion as f

    torch.manual_seed(0)
    model = FusionModel(ModelSpec(model="fusion", fusion=fusion, hidden=(4,)),
                        {**SHAPES, "image": InputShape("image", (1, 8, 8))}, make_task("binary"))
    batch = {"tabular": torch.zeros(4, 3), "omics": torch.zeros(4, 20), "image": torch.rand(4, 1, 8, 8),
             "image.present": torch.tensor([1.0, 1.0, 0.0, 0.0])}
    assert any(isinstance(m, torch.nn.Dropout) and m.p == f.IMAGE_DROPOUT for m in model.encoders["image"].modules())
    model.eval()
    assert torch.equal(model(batch), model(batch))  # no dropout when judging
    omics = model._l2["omics"][1][0].pow(2).sum()
    image = sum(p.pow(2).sum() for n, p in model.encoders["image"].named_parameters()
                if p.dim() > 1 and not (fusion == "late" and n.startswith("1.")))  # not late's output layer
    assert torch.allclose(torch.as_tensor(model.penalty()), f.OMICS_DECAY * omics + f.IMAGE_DECAY * 0.5 * image)
    model.train()
    assert not torch.equal(model(batch)[:2], model(batch)[:2])  # features dropped out in training


def test_modality_dropout_keeps_one_input():
    model = _model("intermediate", dropout=0.9).train()
    present = torch.tensor([1.0, 0.0] * 200)
    m = model.masks({"tabular": torch.zeros(400, 3), "omics": torch.zeros(400, 20), "omics.present": present})
    assert (m.sum(1) >= 1).all()  # every patient keeps at least one input
    assert (m[:, 1] <= present).all()  # dropout never adds an input a patient lacks
    assert 0 < float(m[present == 1].mean()) < 1  # and it does hide some
    assert torch.equal(model.eval().masks({"tabular": torch.zeros(400, 3), "omics": torch.zeros(400, 20),
                                           "omics.present": present})[:, 1], present)  # not when judging


def test_modality_mean_weights_by_patients_with_the_input():
    params = {"encoders.omics.w": np.zeros(2, np.float32), "head.b": np.zeros(1, np.float32)}
    piece = modality_mean(weighted_mean(), ["tabular", "omics"])
    ctx = RoundContext(params, 1, np.random.default_rng(0))

    def update(site, n, omics_rows, w, b):
        return Update(site, {"encoders.omics.w": np.array(w, np.float32), "head.b": np.array([b], np.float32)}, n,
                      {"rows.omics": float(omics_rows)})

    ups = [update("a", 10, 10, [1, 1], 1.0), update("b", 30, 10, [3, 3], 2.0), update("c", 60, 0, [0, 0], 4.0)]
    out, state = piece.apply(ups, piece.init(params), ctx)
    assert np.allclose(out["encoders.omics.w"], [2, 2])  # (10·1 + 10·3) / 20: c had no patient with omics
    assert np.allclose(out["head.b"], [(10 + 60 + 240) / 100])  # the rest: every site, by its patients
    assert piece.scope(state) == {"c": ("encoders.omics.",)}  # c neither receives nor sends it next round
    # a site told to skip the encoder gets no weight for it, whatever it reports
    ups[2] = update("c", 60, 60, [0, 0], 4.0)
    out, state = piece.apply(ups, state, ctx)
    assert np.allclose(out["encoders.omics.w"], [2, 2]) and piece.scope(state) == {}
    # an encoder nobody trained does not move
    out, _ = piece.apply([update("a", 10, 0, [5, 5], 1.0)], {}, ctx)
    assert np.allclose(out["encoders.omics.w"], [0, 0]) and np.allclose(out["head.b"], [1.0])


def test_fusion_refuses_what_cannot_average_part_of_a_model():
    from fedcare.data.dataset import DataShape
    from fedcare.federation.plan import make_plan

    shape = DataShape("binary", ("no", "yes"), SHAPES)
    assert type(make_plan(resolve_config({"model": "fusion"}), shape, ["a", "b"]).algorithm.strategy.pieces[0]) \
        .__name__ == "ModalityMean"
    for bad in ({"aggregator": "median"}, {"secure_aggregation": True}, {"personalization": "ditto"},
                {"algorithm": "scaffold"}):
        with pytest.raises(ConfigError, match="model fusion averages each encoder"):
            make_plan(resolve_config({"model": "fusion", **bad}), shape, ["a", "b", "c"])
    with pytest.raises(Exception, match="apply to model fusion"):
        resolve_config({"modality_dropout": 0.2})


def test_fused_run_with_a_site_without_omics(tmp_path):
    """ovarian-genomics with a third of each site's genes hidden and study-9 without any: every site
    trains and is reported, study-9 stops receiving and sending the omics encoder after round 1,
    FedPer keeps the fusion head local, and summary.json reports by modality."""
    pytest.importorskip("SurvSet")
    from multimodal import blank_input

    from fedcare import simulate
    from fedcare.data import DataSpec, load_dataset

    data = blank_input(load_dataset(DataSpec(dataset="ovarian-genomics")), "omics", 0.3, ("study-9",))
    run = simulate({"dataset": "ovarian-genomics", "model": "fusion", "fusion": "late", "rounds": 2,
                    "personalization": "fedper", "out": str(tmp_path / "run")}, prepared=data)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(s["federated"]["sites"]) == {"study-4", "study-9", "study-13", "study-16"}
    encoder = sum(v.nbytes for k, v in run.global_params.items() if k.startswith("encoders.omics."))
    first, second = s["communication"]["per_round"][:2]
    assert first["upload"] - second["upload"] >= encoder  # study-9 no longer sends it ...
    assert first["broadcast"] - second["broadcast"] >= encoder  # ... nor receives it
    assert first["upload"] - second["upload"] < 2 * encoder  # and only study-9
    m = s["modalities"]
    assert m["inputs"] == ["omics", "tabular"]
    assert set(m["patients"]["study-9"]) == {"tabular"}
    assert set(m["patients"]["study-16"]) == {"omics+tabular", "tabular"}
    assert set(m["by_inputs"]) >= {"federated", "local", "pooled", "personalized", "omics-only", "tabular-only"}
    assert all(set(m["single"][name]) == set(s["federated"]["sites"]) for name in ("omics", "tabular"))
    # a patient without omics is judged by the omics-only model from its bias alone: every score ties
    assert m["by_inputs"]["omics-only"]["study-9"]["tabular"]["c_index"] == 0.5
    page = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>by modality</h2>" in page and "omics only, federated" in page and "<h4>study-9</h4>" in page
    heads = {sid: p["head.scale"] for sid, p in run.site_params.items()}
    assert not np.allclose(heads["study-9"], heads["study-16"])  # each site's own fusion scales
    assert np.array_equal(run.global_params["head.scale"], np.ones(2, np.float32))  # never averaged


def _encoder_bytes(params: dict, name: str) -> tuple[int, int]:
    """(bytes of the arrays of input `name`'s encoder, how many arrays)."""
    arrays = [v for k, v in params.items() if k.startswith(f"encoders.{name}.")]
    return sum(v.nbytes for v in arrays), len(arrays)


def _about(saved: int, encoder: tuple[int, int]) -> bool:
    """`saved` bytes are the encoder's arrays, give or take their safetensors headers (and a few
    digits of metadata: two sites' metrics differ)."""
    size, count = encoder
    return abs(saved - size) <= 120 * count + 64


class _Probe:
    """site-2's real agent, run here: it notes the size of every fit download, and in round 2 first
    sends the updates the coordinator must refuse (the encoder it was not sent; a head array missing)."""

    def __init__(self, d, site: str):
        from fedcare.core.serialization import params_from_bytes, update_to_bytes
        from fedcare.transports.network.agent import AgentSettings, SiteAgent
        from fedcare.transports.network.credentials import SiteCredential, client_ssl_context

        cred = SiteCredential.load(d.pki / "sites" / f"{site}.json")
        settings = AgentSettings(d.url, site, cred.token, d.root / "agents" / site, client_ssl_context(cred.ca_pem),
                                 dataset="synthetic-multimodal-missing")
        probe = self
        self.downloads: dict[int, int] = {}
        self.refused: dict[str, tuple[int, str]] = {}

        class Agent(SiteAgent):
            def _params(self, task):
                if task["kind"] == "fit":
                    probe.downloads[task["round"]] = task["params"]["bytes"]
                return super()._params(task)

            def _put_update(self, task, blob):
                if task["round"] == 2:
                    grad, meta = params_from_bytes(blob)
                    whole = {**self._plan.initial_params(), **grad}  # with the encoder it was not sent
                    head = next(k for k in grad if k.startswith("head."))
                    for what, arrays in (("extra", whole), ("missing", {k: v for k, v in grad.items() if k != head})):
                        body = update_to_bytes(Update(site, arrays, meta["num_examples"], meta["metrics"]), round_=2)
                        r = self.client.put(f"/v1/tasks/{task['id']}/update", content=body)
                        probe.refused[what] = (r.status_code, r.json()["detail"])
                super()._put_update(task, blob)

        self.agent = Agent(settings, say=lambda line: None)


def test_sites_without_an_input_take_part_over_the_network(deployment, tmp_path):
    """The generated three-modality demo's variant (site-2 has no images, site-3 no omics) over TLS
    with real processes: every site trains and is judged, and the result is the simulation's. From
    round 2 site-2 downloads the model without the image encoder and uploads no update for it (site-3
    likewise for omics): its bytes are a full site's less that encoder's, as in simulation; an update
    holding the encoder it was not sent, or lacking an array, is refused with one line."""
    pytest.importorskip("PIL")
    import os
    import threading

    from fedcare import simulate

    config = {"dataset": "synthetic-multimodal-missing", "model": "fusion", "rounds": 2, "seed": 1,
              "baselines": False}
    sites = ["site-1", "site-2", "site-3", "site-4"]
    d = deployment(config, sites)
    d.start_coordinator("--start")
    for site in sites:
        if site != "site-2":
            d._spawn(site, ["site", "--coordinator", d.url, "--credential", str(d.pki / "sites" / f"{site}.json"),
                            "--dataset", config["dataset"], "--state", str(d.root / "agents" / site)])
    probe = _Probe(d, "site-2")
    umask = os.umask(0o022)  # the agent sets its own (0077): this process's is given back after it
    thread = threading.Thread(target=probe.agent.run, daemon=True)
    thread.start()
    status = d.wait_completed()
    thread.join(timeout=60)
    os.umask(umask)
    net = json.loads((d.run_dir(status) / "summary.json").read_text())
    simulated = simulate({**config, "out": str(tmp_path / "simulated")})
    sim = simulated.summary
    assert net["federated"] == sim["federated"]
    assert net["communication"]["per_round"] == sim["communication"]["per_round"]  # the same bytes, each way
    assert set(net["federated"]["sites"]) == set(sites)
    rows = [json.loads(line) for line in (d.run_dir(status) / "metrics.jsonl").read_text().splitlines()]
    trained = {r["site"]: r for r in rows if r["split"] == "train" and r["round"] == 2}
    assert set(trained) == set(sites)
    assert trained["site-3"]["rows.omics"] == 0 and trained["site-2"]["rows.image"] == 0
    assert trained["site-1"]["rows.omics"] > 0
    image, omics = (_encoder_bytes(simulated.global_params, n) for n in ("image", "omics"))
    # downloads: round 1 the whole model, round 2 without the image encoder
    assert _about(probe.downloads[1] - probe.downloads[2], image), (probe.downloads, image)
    # uploads, from the coordinator's audit log: round 2's updates of the sites lacking an input are smaller
    audit = d.client.get("/v1/audit").json()
    sent = {a["site_id"]: int(a["detail"].split()[0]) for a in audit if a["action"] == "update 2.fit"}
    assert _about(sent["site-1"] - sent["site-2"], image) and _about(sent["site-4"] - sent["site-2"], image), sent
    assert _about(sent["site-1"] - sent["site-3"], omics), sent
    first, second = net["communication"]["per_round"][:2]
    assert _about(first["upload"] - second["upload"], (image[0] + omics[0], image[1] + omics[1]))
    assert _about(first["broadcast"] - second["broadcast"], (image[0] + omics[0], image[1] + omics[1]))
    # what the coordinator refused before site-2's good update: one line each, naming the array
    code, line = probe.refused["extra"]
    assert code == 422 and "unexpected array 'encoders.image." in line and "'encoders.image.'" in line, line
    code, line = probe.refused["missing"]
    assert code == 422 and "lack array 'head." in line and "\n" not in line, line


_HOSTED_RUN = ("import json, sys; sys.path.insert(0, sys.argv[1]); from multimodal import blank_input; "
               "from fedcare import simulate; from fedcare.data import DataSpec, load_dataset; "
               "data = blank_input(load_dataset(DataSpec(dataset='ovarian-genomics')), 'omics', 0.3, ('study-9',)); "
               "simulate({**json.loads(sys.argv[3]), 'out': sys.argv[2]}, prepared=data)")


@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_hosted_workers_skip_the_encoder_as_the_in_process_backend_does(backend, tmp_path):
    """backend processes and ray, on ovarian-genomics with study-9 lacking omics: after round 1
    study-9 neither receives nor sends the omics encoder (in the federation and in its local
    baseline), and the run is the in-process run bit for bit, its bytes, checkpoints and baselines
    included. Each hosted run is its own process (Ray starts once per process)."""
    import subprocess

    pytest.importorskip("SurvSet")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'fedcare[ray]')")
    import os

    from conftest import SRC, summary_without_wall
    from multimodal import blank_input

    from fedcare import simulate
    from fedcare.data import DataSpec, load_dataset

    data = blank_input(load_dataset(DataSpec(dataset="ovarian-genomics")), "omics", 0.3, ("study-9",))
    config = {"dataset": "ovarian-genomics", "model": "fusion", "fusion": "late", "rounds": 2,
              "personalization": "fedper", "checkpoint_every": 1}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)}
    ref = simulate({**config, "out": str(tmp_path / "in-process")}, prepared=data)
    done = subprocess.run([sys.executable, "-c", _HOSTED_RUN, str(Path(__file__).resolve().parents[1] / "benchmarks"),
                           str(tmp_path / backend), json.dumps({**config, "backend": backend, "workers": 2})],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    hosted, here = (summary_without_wall(tmp_path / name) for name in (backend, "in-process"))
    here.pop("modalities")  # the report by modality needs the sites in this process: a warning says so there
    warning = f"no report by modality with backend {backend}: it needs the sites in this process (backend in-process)"
    assert hosted.pop("warnings") == [warning] and here.pop("warnings") == []
    assert hosted == here
    models = sorted((tmp_path / "in-process").rglob("*.safetensors"))  # the models, every checkpoint
    assert any("checkpoints" in str(p) for p in models)
    for path in models:
        assert path.read_bytes() == (tmp_path / backend / path.relative_to(tmp_path / "in-process")).read_bytes()
    first, second = hosted["communication"]["per_round"]
    omics = _encoder_bytes(ref.global_params, "omics")
    assert _about(first["upload"] - second["upload"], omics)  # study-9 no longer sends it ...
    assert _about(first["broadcast"] - second["broadcast"], omics)  # ... nor receives it


def test_a_compressed_broadcast_without_an_encoder_survives_a_coordinator_restart(deployment, tmp_path):
    """Over TLS with fp16 broadcasts and int8 updates, the coordinator killed after round 2 and
    restarted: it resumes with what it knew of each site's inputs (site-2 and site-3 are still sent
    the model without the encoder they lack, which their agents read against the model less that
    encoder), and the run, its bytes included, is the simulation's."""
    pytest.importorskip("PIL")
    from fedcare import simulate

    config = {"dataset": "synthetic-multimodal-missing", "model": "fusion", "rounds": 4, "seed": 2,
              "baselines": False, "compress_broadcast": "fp16", "compress_updates": "int8"}
    sites = ["site-1", "site-2", "site-3", "site-4"]
    d = deployment(config, sites)
    d.start_coordinator("--start")
    for site in sites:
        d._spawn(site, ["site", "--coordinator", d.url, "--credential", str(d.pki / "sites" / f"{site}.json"),
                        "--dataset", config["dataset"], "--state", str(d.root / "agents" / site)])
    d.wait_for(lambda s: len(s.get("rounds", [])) >= 2, timeout=400, what="two rounds")
    d.kill("coordinator")
    d.start_coordinator()  # finds the interrupted run and resumes it
    status = d.wait_completed(timeout=400)
    assert "resuming run" in d.log("coordinator")
    assert [r["round"] for r in status["rounds"]] == [1, 2, 3, 4]
    net = json.loads((d.run_dir(status) / "summary.json").read_text())
    sim = simulate({**config, "out": str(tmp_path / "simulated")}).summary
    assert net["federated"] == sim["federated"]
    assert net["communication"] == sim["communication"]
    per_round = net["communication"]["per_round"]
    assert per_round[0]["broadcast"] > per_round[1]["broadcast"] == per_round[2]["broadcast"] == per_round[3]["broadcast"]
