"""Readers of the published feature formats, on small fixtures built here (.pth tensors and arrays, MMKB .h5)."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from pykeen_momok.datasets.archives import (
    PUBLISHED_SHAPES,
    authors_feature_member,
    find_authors_feature_file,
    load_pth_matrix,
    read_image_index,
    read_mmkb_image_features,
    reference_pooling,
)
from pykeen_momok.nn.adapters import POOLING_LAYOUTS, reference_pool

#: (dataset, modality) -> width of the published matrices and the pooling layout the reference applies
REFERENCE = {
    ("DB15K", "image"): (4096, "db15k-image"),
    ("DB15K", "text"): (768, "text-12x64"),
    ("MKG-W", "image"): (383, "identity"),
    ("MKG-W", "text"): (384, "mkg-text"),
    ("MKG-Y", "image"): (383, "identity"),
    ("MKG-Y", "text"): (384, "mkg-text"),
}


@pytest.mark.parametrize(("dataset", "modality"), sorted(REFERENCE))
def test_published_shapes_and_pooling_layouts(tmp_path, dataset, modality):
    width, layout = REFERENCE[dataset, modality]
    assert PUBLISHED_SHAPES[dataset][modality][1] == width
    assert reference_pooling(modality, width) == layout
    # a few rows in the published width, saved as the authors did (torch.save of a float tensor)
    matrix = torch.randn(5, width)
    path = tmp_path / authors_feature_member(dataset, modality)
    path.parent.mkdir(parents=True)
    torch.save(matrix, path)
    assert find_authors_feature_file(tmp_path, dataset, modality) == path
    loaded = load_pth_matrix(path, expected_shape=(5, width))
    assert loaded.labels is None and loaded.present is None
    np.testing.assert_array_equal(loaded.features, matrix.numpy())
    # the model's registry of the layouts (pykeen_momok.nn.adapters) has this name, for this width
    assert POOLING_LAYOUTS[layout].in_dim in (width, None)
    pooled = reference_pool(torch.from_numpy(loaded.features), layout)
    assert pooled.shape == (5, width if layout == "identity" else 256)


def test_fb15k237_and_kuai_widths_use_the_12x64_layout():
    assert reference_pooling("image", 768) == "text-12x64"
    assert reference_pooling("text", 768) == "text-12x64"
    assert reference_pooling("image", 384) == "identity"  # only text is 12x32-pooled at 384
    for modality, width in (("image", 4096), ("text", 768), ("text", 384), ("image", 383)):
        assert POOLING_LAYOUTS[reference_pooling(modality, width)].in_dim in (width, None)


def test_numpy_array_pickled_by_torch_loads_safely(tmp_path):
    array = np.random.default_rng(0).random((4, 383)).astype(np.float32)
    path = tmp_path / "img_features.pth"
    torch.save(array, path)
    np.testing.assert_array_equal(load_pth_matrix(path).features, array)


def test_float64_and_dict_forms(tmp_path):
    path = tmp_path / "a.pth"
    torch.save({"features": torch.ones(3, 2, dtype=torch.float64)}, path)
    loaded = load_pth_matrix(path)
    assert loaded.features.dtype == np.float32 and loaded.features.shape == (3, 2)
    path = tmp_path / "b.pth"
    torch.save({"e1": torch.zeros(4), "e2": torch.ones(4)}, path)
    loaded = load_pth_matrix(path)
    assert list(loaded.labels) == ["e1", "e2"]
    np.testing.assert_array_equal(loaded.features[1], np.ones(4, dtype=np.float32))


def test_wrong_shape_is_rejected(tmp_path):
    path = tmp_path / "img_features.pth"
    torch.save(torch.zeros(12842, 4095), path)
    with pytest.raises(ValueError, match="expected width 4096"):
        load_pth_matrix(path, expected_shape=(12842, 4096))
    with pytest.raises(ValueError, match="expected 15000 rows"):
        load_pth_matrix(path, expected_shape=(15000, None))
    torch.save(torch.zeros(7), path)
    with pytest.raises(ValueError, match="matrix"):
        load_pth_matrix(path)


def test_arbitrary_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = tmp_path / "evil.pth"
    with path.open("wb") as file:
        pickle.dump(Evil(), file, protocol=2)
    with pytest.raises(ValueError, match="weights_only"):
        load_pth_matrix(path)


def test_mmkb_h5_with_image_index(tmp_path):
    index_path = tmp_path / "DB15K_ImageIndex.txt"
    index_path.write_text("<e/a>\tDBIMG00001\n<e/b>\tDBIMG00002\n<e/c>\tDBIMG00009\n", encoding="utf-8")
    h5_path = tmp_path / "DB15K_ImageData.h5"
    with h5py.File(h5_path, "w") as file:
        file.create_dataset("DBIMG00001", data=np.full((1, 4096), 1.0, dtype=np.float32))  # MMKB stores (1, 4096)
        file.create_dataset("DBIMG00002", data=np.full((4096,), 2.0, dtype=np.float32))
    assert read_image_index(index_path) == {"<e/a>": "DBIMG00001", "<e/b>": "DBIMG00002", "<e/c>": "DBIMG00009"}
    matrix = read_mmkb_image_features(h5_path, index_path, ["<e/b>", "<e/z>", "<e/a>", "<e/c>"])
    assert matrix.features.shape == (4, 4096)
    # <e/z> has no image; <e/c>'s image id is missing from the file: both absent
    assert matrix.present.tolist() == [True, False, True, False]
    assert matrix.features[0, 0] == 2.0 and matrix.features[2, 0] == 1.0 and matrix.features[1].sum() == 0
    assert reference_pooling("image", matrix.features.shape[1]) == "db15k-image"


def test_malformed_image_index_is_reported(tmp_path):
    path = tmp_path / "index.txt"
    path.write_text("<e/a> DBIMG00001\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"index\.txt', line 1: expected 'label<TAB>image id'"):
        read_image_index(path)
