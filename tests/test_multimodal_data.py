"""Several files per patient (data/multimodal.py, docs/multimodal.md): the join by patient at each
site, inputs some patients or whole sites lack (zeros and a `.present` companion, fitted only over
the sites and patients that have them), the errors, and the generated three-modality demo."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from test_prepare import PHASE_KEYS

from fedcare.core.config.data import InputFile
from fedcare.core.errors import ConfigError, DataError
from fedcare.data import DataSpec, load_dataset
from fedcare.data.joinedfiles import joined_sites
from fedcare.data.prepare import ask_in_process, prepare


def _rows(arrays: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """A split's rows side by side, sorted, so that two splits with the same patients compare equal."""
    m = np.column_stack([arrays[n].reshape(len(arrays[n]), -1) for n in names])
    return m[np.lexsort(m.T[::-1])]


def test_the_ovarian_studies_written_as_clinical_and_gene_files_join_into_the_builtin_arrays(tmp_path):
    pytest.importorskip("SurvSet")
    from fedcare.data.ovarianlayout import CLINICAL, GENES, write_ovarian_layout

    folders = write_ovarian_layout(tmp_path)
    genes = pd.read_csv(folders[0] / GENES)
    assert list(pd.read_csv(folders[0] / CLINICAL).columns) == ["pid", "time", "event", "debulk"]
    assert genes.shape[1] == 1 + 158 and genes["pid"].is_unique
    spec = DataSpec(data=[str(f / CLINICAL) for f in folders], patient="pid", time="time", event="event",
                    categorical=["debulk"], inputs=[InputFile(kind="omics", file=[str(f / GENES) for f in folders])])
    joined, builtin = load_dataset(spec), load_dataset(DataSpec(dataset="ovarian-genomics"))
    assert joined.shape.inputs == builtin.shape.inputs  # the same genes, the same debulking columns
    assert [s.site_id for s in joined.sites] == [s.site_id for s in builtin.sites]  # the folders' names
    for ours, theirs in zip(joined.sites, builtin.sites):
        for part in ("train", "test"):
            a, b = ours.splits[part].arrays, theirs.splits[part].arrays
            # the same patients in each split, encoded bit for bit alike (the split keeps patients, not row order)
            assert np.array_equal(_rows(a, ["time", "event", "tabular", "omics"]),
                                  _rows(b, ["time", "event", "tabular", "omics"]))
            assert np.all(a["omics.present"] == 1.0) and "omics.present" not in b
    assert joined.preprocessing["patients_without_outcome"] == {"omics": {s.site_id: 0 for s in joined.sites}}


def _layout(tmp_path):
    """Three hospitals in one clinical and one gene file with a site column: at 'a' patient a3 has no
    genes; 'b' has no gene rows at all; 'c' has a gene row of a patient with no clinical row."""
    rng = np.random.default_rng(0)
    clinical, genes = [], []
    for site, n in (("a", 12), ("b", 10), ("c", 14)):
        for k in range(n):
            pid = f"{site}{k}"
            clinical.append({"pid": pid, "hospital": site, "age": 50 + k, "y": int(rng.random() < 0.5)})
            if site == "a" and k == 3 or site == "b":
                continue
            genes.append({"pid": pid, "hospital": site, "g1": round(float(rng.normal(5, 2)), 3),
                          "g2": round(float(rng.normal(-1, 1)), 3)})
    genes.append({"pid": "c99", "hospital": "c", "g1": 100.0, "g2": 100.0})  # no outcome: not an example
    pd.DataFrame(clinical).to_csv(tmp_path / "clinical.csv", index=False)
    pd.DataFrame(genes[::-1]).to_csv(tmp_path / "genes.csv", index=False)  # another row order
    return pd.DataFrame(genes), DataSpec(data=[str(tmp_path / "clinical.csv")], site="hospital", label="y",
                                         patient="pid", inputs=[InputFile(kind="omics", file=str(tmp_path / "genes.csv"))])


def test_patients_and_sites_lacking_an_input_get_zeros_a_companion_and_send_nothing_for_it(tmp_path):
    genes, spec = _layout(tmp_path)
    sites, extra = joined_sites(spec)
    heard: dict[str, list[dict]] = {}
    inner = ask_in_process(sites)

    joined_keys = {"columns": {"inputs"}, "schema": {"present"}, "split": {"present"}}

    def ask(phase, question):
        answers = inner(phase, question)
        for site, answer in answers.items():  # only the documented keys (prepare.py's docstring)
            allowed = PHASE_KEYS[phase.rpartition(".")[2]] | joined_keys.get(phase, set())
            assert set(answer) <= (allowed | {"absent"} if "." in phase else allowed), (phase, set(answer))
            if phase.startswith("omics."):
                heard.setdefault(site, []).append(answer)
        return answers

    prepared = prepare(spec, [s.site_id for s in sites], ask)
    assert prepared.shape.inputs["omics"].features == ("g1", "g2")
    assert all(a == {"absent": True} for a in heard["b"])  # site b has no genes: no statistics of them
    assert all("absent" not in a for a in heard["a"] + heard["c"])
    assert extra["patients_without_outcome"] == {"omics": {"a": 0, "b": 0, "c": 1}}
    with_input = prepared.preprocessing["patients_with_input"]["omics"]
    assert sum(with_input["b"].values()) == 0 and sum(with_input["a"].values()) == 11
    # the fit is over the training patients that have genes, at the sites that have them
    train_ids = []
    for site in sites:
        rows = site._rows.take(site._split.train)  # the site's own rows, read here to check the fitted mean
        train_ids += [p for p in rows["pid"] if p in set(genes["pid"])]
    mean = genes.set_index("pid").loc[train_ids, "g1"].mean()
    assert prepared.preprocessing["numeric"]["g1"]["mean"] == pytest.approx(mean, rel=1e-9)
    assert prepared.preprocessing["train_missing_counts"]["g1"] == 0  # absent patients are not missing values
    data = {s.site_id: s.data for s in sites}
    for site_id, site in data.items():
        for part in ("train", "test"):
            arrays = site.splits[part].arrays
            present = arrays["omics.present"]
            assert present.dtype == np.float32 and present.shape == (len(arrays["label"]),)
            assert np.all(arrays["omics"][present == 0] == 0.0)
            assert arrays["omics"].shape[1] == 2
            if site_id == "b":
                assert not present.any()
            if site_id == "c":
                assert present.all()
    a = np.concatenate([data["a"].splits[p].arrays["omics.present"] for p in ("train", "test")])
    assert a.sum() == 11 and len(a) == 12  # only a3 lacks genes
    assert "omics.present" not in data["a"].splits["train"].names or "tabular.present" not in \
        data["a"].splits["train"].names  # the file holding the outcome has no companion: every patient has it


def test_joined_files_refuse_bad_input_with_one_line(tmp_path):
    _, spec = _layout(tmp_path)
    clinical = pd.read_csv(tmp_path / "clinical.csv")
    genes = pd.read_csv(tmp_path / "genes.csv")
    twice = pd.concat([genes, genes.iloc[[0]]])
    twice.to_csv(tmp_path / "twice.csv", index=False)
    genes.assign(pid="x" + genes["pid"]).to_csv(tmp_path / "nomatch.csv", index=False)
    genes.rename(columns={"pid": "patient"}).to_csv(tmp_path / "nopid.csv", index=False)
    genes.assign(age=1).to_csv(tmp_path / "clash.csv", index=False)
    cases = {"twice.csv": "appears twice in 'twice.csv'", "nomatch.csv": "matches a patient of 'clinical.csv'",
             "nopid.csv": "has no patient column 'pid'", "clash.csv": "column 'age' is in 'clash.csv'"}
    for name, words in cases.items():
        bad = spec.model_copy(update={"inputs": (InputFile(kind="omics", file=str(tmp_path / name)),)})
        with pytest.raises(DataError, match=words.replace("(", r"\(")) as info:
            load_dataset(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="--patient"):
        DataSpec(data=[str(tmp_path / "clinical.csv")], site="hospital", label="y",
                 inputs=[InputFile(kind="omics", file="genes.csv")]).check_values()
    assert len(clinical) == 36  # the user's files are read, never written
    proc = run_cli("simulate", "--data", "clinical.csv", "--site", "hospital", "--label", "y", "--patient", "pid",
                   "--omics", "twice.csv", "--rounds", "1", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(
        "error: patient 'c99' appears twice in 'twice.csv' at site 'c' (again in row 28)")


def _digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def test_the_synthetic_demo_is_deterministic_named_synthetic_and_each_modality_carries_signal(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from fedcare.data import synthetic_multimodal
    from fedcare.data.builtin import dataset_info, get_builtin

    folder = synthetic_multimodal.ensure()  # the tests' cache, shared with the other tests
    for again in ("one", "two"):  # a site written afresh, twice, is the cached one byte for byte
        synthetic_multimodal._write_site(tmp_path / again, 0, "site-1", synthetic_multimodal.SEED)
        assert _digest(tmp_path / again / "site-1") == _digest(folder / "site-1")
    for name in ("synthetic-multimodal", "synthetic-multimodal-missing"):
        info = next(d for d in dataset_info() if d["name"] == name)
        assert info["description"].startswith("SYNTHETIC") and "no real patients" in info["source"]
    full = load_dataset(DataSpec(dataset="synthetic-multimodal"))
    assert {n: s.kind for n, s in full.shape.inputs.items()} == {"tabular": "tabular", "omics": "omics", "image": "image"}

    def pooled(data, part):
        splits = [s.splits[part] for s in data.sites]
        taken = [e.take(np.arange(len(e))) for e in splits]
        return {k: np.concatenate([t[k] for t in taken]) for k in taken[0]}

    train, test = pooled(full, "train"), pooled(full, "test")
    assert 0.7 < train["omics.present"].mean() < 0.95 and 0.7 < train["image.present"].mean() < 0.95

    def features(d, names):
        return np.hstack([d[n].reshape(len(d[n]), -1) for n in names]
                         + [d[f"{n}.present"][:, None] for n in names if n != "tabular"])

    auc = {}
    for names in (["tabular"], ["omics"], ["image"], ["tabular", "omics", "image"]):
        model = LogisticRegression(C=0.1, max_iter=2000).fit(features(train, names), train["label"])
        auc["+".join(names)] = roc_auc_score(test["label"], model.predict_proba(features(test, names))[:, 1])
    single = max(v for k, v in auc.items() if "+" not in k)
    assert min(v for k, v in auc.items() if "+" not in k) > 0.58  # every modality carries part of the signal
    assert auc["tabular+omics+image"] > single + 0.1  # and together they beat each one
    variant = get_builtin("synthetic-multimodal-missing")
    site2, site3 = (variant.read_site(s)[0] for s in ("site-2", "site-3"))
    assert not site2.present["image"].any() and site2.present["omics"].mean() > 0.7
    assert not site3.present["omics"].any() and site3.present["image"].mean() > 0.7
    assert site3.inputs["omics"] == variant.read_site("site-1")[0].inputs["omics"]  # every site has the genes' columns


def test_simulate_runs_on_joined_files_where_a_site_declares_no_images(tmp_path):
    """The generated folder through the CLI: every site's clinical, omics and image files, except
    site-2's images, which it does not give: it trains and is reported like the others."""
    from fedcare.data import synthetic_multimodal

    folder = synthetic_multimodal.ensure()
    args = ["simulate", "--label", "outcome", "--patient", "pid", "--categorical", "sex", "--image-size", "16",
            "--image-size", "16", "--rounds", "1", "--local-epochs", "1", "--out", "run"]
    for site in synthetic_multimodal.SITES:
        args += ["--data", str(folder / site / "clinical.csv"), "--omics", str(folder / site / "omics.csv")]
        if site != "site-2":
            args += ["--images", str(folder / site / "images.csv")]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for model in ("local", "federated", "pooled"):
        assert set(summary[model]["sites"]) == set(synthetic_multimodal.SITES)
    with_input = summary["preprocessing"]["patients_with_input"]
    assert sum(with_input["image"]["site-2"].values()) == 0 and sum(with_input["image"]["site-1"].values()) > 0
    assert summary["preprocessing"]["patients_without_outcome"]["image"]["site-1"] == synthetic_multimodal.ORPHANS
