"""The image input: real DICOM (pydicom-data's CT and MR), NIfTI (nilearn's MNI template) and PNG files
through the reader; manifests, bad files, patient splits, federated normalisation, masks, lazy reading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")
Image = pytest.importorskip("PIL.Image")

from fedcare.core.errors import ConfigError, DataError
from fedcare.data import DataSpec, load_dataset
from fedcare.data.imagefiles import BadImage, read_image, resample
from fedcare.data.inputs.image import merge_moments
from fedcare.data.lazy import ColumnExamples


def pydicom_data(name: str) -> Path:
    """A file of the pydicom-data package (real scans shipped for testing; nothing downloaded)."""
    data_store = pytest.importorskip("data_store")
    path = Path(data_store.__file__).parent / "data" / name
    assert path.is_file(), path
    return path


def test_a_real_ct_dicom_file_reads_as_one_2d_slice_in_hounsfield_units():
    path = pydicom_data("693_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "CT"
    image = read_image(path)
    assert image.shape == (1, 512, 512) and image.dtype == np.float32
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(image[0], expected)
    assert image.min() < -500  # air, in HU: the rescale was applied


def test_a_real_mr_dicom_file_and_a_multiframe_mr_volume():
    mr = read_image(pydicom_data("MR2_UNCR.dcm"))
    assert mr.shape == (1, 1024, 1024)
    volume = read_image(pydicom_data("emri_small.dcm"))  # 10 frames of 64 x 64: one 3-D image
    assert volume.shape == (1, 10, 64, 64)
    np.testing.assert_array_equal(volume[0], pydicom.dcmread(pydicom_data("emri_small.dcm")).pixel_array)


def test_a_dicom_series_folder_is_one_volume_with_slices_in_position_order(tmp_path):
    """A series folder built from the real CT: three slices whose file names run against their
    positions; the reader orders them by ImagePositionPatient."""
    source = pydicom.dcmread(pydicom_data("693_UNCR.dcm"))
    folder = tmp_path / "series"
    folder.mkdir()
    base = source.pixel_array.astype(np.int32)
    for k, z in enumerate((30.0, 20.0, 10.0)):  # file 0 is the highest slice
        ds = source.copy()
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.PixelData = np.clip(base + 100 * k, 0, np.iinfo(source.pixel_array.dtype).max).astype(
            source.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"slice-{k}.dcm")
    volume = read_image(folder)
    assert volume.shape == (1, 3, 512, 512)
    slope, intercept = float(source.RescaleSlope), float(source.RescaleIntercept)
    for position, k in enumerate((2, 1, 0)):  # z = 10, 20, 30
        expected = np.clip(base + 100 * k, 0, None) * slope + intercept
        np.testing.assert_allclose(volume[0, position], expected)


def test_the_mni_template_nifti_reads_as_a_3d_volume():
    datasets = pytest.importorskip("nilearn.datasets")
    path = Path(datasets.MNI152_FILE_PATH)
    assert path.name.endswith(".nii.gz") and path.is_file()
    image = read_image(path)
    expected = nibabel.load(str(path)).get_fdata()
    assert image.shape == (1, *expected.shape) and len(expected.shape) == 3
    np.testing.assert_allclose(image[0], expected, rtol=1e-6)
    small = resample(image, (24, 28, 24))
    assert small.shape == (1, 24, 28, 24)
    assert abs(small.mean() - image.mean()) < 0.1 * image.std()


def test_png_grey_16_bit_and_colour(tmp_path):
    grey = (np.arange(40 * 30) % 251).reshape(40, 30).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    deep = (np.arange(20 * 10) * 300).reshape(20, 10).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    colour = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png")[0], grey)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png")[0], deep)
    rgb = read_image(tmp_path / "colour.png")
    assert rgb.shape == (3, 40, 30)
    np.testing.assert_array_equal(rgb[2], 255 - grey)


def test_a_bad_file_is_one_line_naming_it(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    for path in (broken, tmp_path / "missing.nii.gz", tmp_path / "notes.txt"):
        if path.suffix == ".txt":
            path.write_text("hello")
        with pytest.raises(BadImage) as info:
            read_image(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# ----- manifests --------------------------------------------------------------------------------


def write_scans(folder: Path, sites: int = 2, per_site: int = 16, size: int = 24, seed: int = 0,
                segmentation: bool = False) -> Path:
    """A small manifest of real PNG files: a bright square (the lesion) in half the images; each
    site its own brightness and noise; two images per patient. Relative paths."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(sites):
        for k in range(per_site):
            lesion = k % 2
            image = rng.normal(100 + 50 * s, 5 + 5 * s, (size, size))
            mask = np.zeros((size, size), np.uint8)
            if lesion:
                mask[6:14, 8:16] = 2 if segmentation and k % 4 == 3 else 1
                image[mask > 0] += 80 * mask.max()  # class 2 twice as bright
            name = f"img/s{s}-{k}"
            Image.fromarray(np.clip(image, 0, 65535).astype(np.uint16)).save(folder / f"{name}.png")
            Image.fromarray(mask).save(folder / f"{name}-mask.png")
            rows.append({"path": f"{name}.png", "mask": f"{name}-mask.png", "label": lesion, "site": f"site-{s + 1}",
                         "patient": f"s{s}-p{k // 2}"})
    path = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def pixels(site, split: str, name: str = "image") -> np.ndarray:
    examples = site.splits[split]
    return examples.take(np.arange(len(examples)), [name])[name]


def test_a_manifest_streams_its_images_split_by_patient(tmp_path):
    manifest = write_scans(tmp_path)
    data = load_dataset(DataSpec(images=str(manifest), image_size=(16, 16)))
    assert data.shape.task == "binary" and data.shape.inputs["image"].shape == (1, 16, 16)
    frame = pd.read_csv(manifest)
    for site in data.sites:
        train = site.splits["train"]
        assert isinstance(train, ColumnExamples) and not train.in_memory  # images stay on disk
        batch = train.take(np.array([1, 0]), ["image"])["image"]
        assert batch.shape == (2, 1, 16, 16)
        patients = {}
        for split in ("train", "test"):
            ex = site.splits[split]
            for path in ex.columns["image"].paths:
                row = frame[frame["path"].map(lambda p: str((tmp_path / p).resolve())) == path].iloc[0]
                patients.setdefault(row["patient"], set()).add(split)
        assert all(len(s) == 1 for s in patients.values()), "a patient on both sides of the split"
        assert len(patients) == 8


def test_normalisation_is_fitted_from_every_sites_training_images_only(tmp_path):
    manifest = write_scans(tmp_path)
    data = load_dataset(DataSpec(images=str(manifest), image_size=(16, 16)))
    fitted = data.preprocessing["images"]["image"]
    raw = []
    for site in data.sites:
        for path in site.splits["train"].columns["image"].paths:
            raw.append(resample(read_image(path), (16, 16)).astype(np.float64))
    raw = np.stack(raw)
    assert fitted["training_voxels"] == raw.size
    assert fitted["mean"][0] == pytest.approx(raw.mean(), rel=1e-9)
    assert fitted["std"][0] == pytest.approx(raw.std(), rel=1e-9)
    z = np.concatenate([pixels(s, "train") for s in data.sites])
    assert abs(z.mean()) < 1e-4 and z.std() == pytest.approx(1.0, rel=1e-4)


def test_merged_moments_equal_the_pooled_ones():
    rng = np.random.default_rng(1)
    parts = [rng.normal(m, s, n) for m, s, n in ((0, 1, 50), (10, 3, 7), (-4, 0.5, 300))]
    merged = merge_moments([(len(p), p.mean(), ((p - p.mean()) ** 2).sum()) for p in parts])
    pooled = np.concatenate(parts)
    assert merged[0] == len(pooled)
    assert merged[1] == pytest.approx(pooled.mean(), rel=1e-12)
    assert merged[2] == pytest.approx(((pooled - pooled.mean()) ** 2).sum(), rel=1e-12)


def test_what_leaves_a_site_during_preparation_is_counts_and_moments(tmp_path):
    """Record the real exchange: no answer carries a path, a pixel array or more numbers than moments."""
    from fedcare.data.loader import _sites_from_column
    from fedcare.data.manifest import manifest_spec, read_manifest
    from fedcare.data.prepare import SitePreparation, prepare

    path = write_scans(tmp_path)
    manifest = read_manifest(path)
    spec = manifest_spec(DataSpec(images=str(path)), list(manifest.frame.columns))
    sites = [SitePreparation(r) for r in _sites_from_column(manifest.frame, "site", path.name)]
    sent = []

    def ask(phase, question):
        answers = {s.site_id: s.answer(phase, question) for s in sites}
        sent.append((phase, json.dumps(answers)))
        return answers

    prepare(spec, [s.site_id for s in sites], ask)
    phases = [p for p, _ in sent]
    assert "image.probe" in phases and "image.stats" in phases
    for phase, text in sent:
        assert str(tmp_path) not in text and ".png" not in text, phase
        assert len(text) < 2000, phase  # aggregates, not images


def test_a_bad_image_in_a_manifest_names_the_file_or_is_skipped_and_counted(tmp_path):
    manifest = write_scans(tmp_path)
    (tmp_path / "img" / "s0-3.png").write_bytes(b"truncated")
    with pytest.raises(DataError) as info:
        load_dataset(DataSpec(images=str(manifest), image_size=(16, 16)))
    message = str(info.value)
    assert "s0-3.png" in message and "--skip-bad-images" in message and "\n" not in message
    with pytest.warns(UserWarning, match="skipped 1 bad image"):
        data = load_dataset(DataSpec(images=str(manifest), image_size=(16, 16), skip_bad_images=True))
    assert len(data.preprocessing["images_skipped"]) == 1 and "s0-3.png" in data.preprocessing["images_skipped"][0]
    assert sum(sum(s.sizes().values()) for s in data.sites) == 31


def test_wrong_dimensionality_and_a_mask_of_another_size_are_bad_files(tmp_path):
    manifest = write_scans(tmp_path)
    volume = tmp_path / "img" / "volume.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), volume)
    frame = pd.read_csv(manifest)
    frame.loc[5, "path"] = "img/volume.nii.gz"
    frame.drop(columns=["mask"]).to_csv(manifest, index=False)  # (else its mask's size is found wrong first)
    with pytest.raises(DataError, match="volume.nii.gz' is 3-D with 1 channel"):
        load_dataset(DataSpec(images=str(manifest)))
    frame = pd.read_csv(write_scans(tmp_path))
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "img" / "small-mask.png")
    frame.loc[2, "mask"] = "img/small-mask.png"
    frame.to_csv(manifest, index=False)
    with pytest.raises(DataError, match="small-mask.png' is \\[5, 5\\]"):
        load_dataset(DataSpec(images=str(manifest), task="segmentation"))


def test_image_size_must_match_the_images_axes(tmp_path):
    manifest = write_scans(tmp_path)
    with pytest.raises(ConfigError, match="2-D but --image-size gives 3"):
        load_dataset(DataSpec(images=str(manifest), image_size=(8, 8, 8)))


def test_segmentation_masks_are_a_lazy_target_mapped_to_class_indices(tmp_path):
    manifest = write_scans(tmp_path, segmentation=True)
    data = load_dataset(DataSpec(images=str(manifest), task="segmentation", image_size=(12, 12)))
    assert data.shape.task == "segmentation" and data.shape.classes == ("background", "class 1", "class 2")
    site = data.sites[0]
    masks = pixels(site, "train", "mask")
    assert masks.shape == (len(site.splits["train"]), 12, 12) and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1, 2}
    assert "label" not in site.splits["train"].names  # the other target column is not a feature
