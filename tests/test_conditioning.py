"""Models conditioned on a classical fusion (core.conditioning): training data, metadata and tiled inference agree."""

from __future__ import annotations

import numpy as np
import pytest

from core.baselines import mtf_glp_hs
from core.conditioning import base_image
from core.normalization import BandNormalization
from core.raster_io import read_raster
from core.resample import upsample
from core.sensor import gaussian_psf, simulate_pair, spectral_response
from export.metadata import ModelMetadata
from export.sampler import Denoiser
from export.testing import contract_model, make_metadata
from export.tiling import fuse_arrays


@pytest.fixture(scope="module")
def pair(shared_data):
    cube, meta = read_raster(shared_data / "cave_balloons.tif")
    ref = cube[:, 128:224, 128:224]
    srf = spectral_response("nikon_d700", meta.wavelengths, meta.fwhm)
    lr, msi = simulate_pair(ref, 4, srf.matrix)
    return ref, lr, msi


def test_base_image_is_the_one_definition(pair):
    _, lr, msi = pair
    np.testing.assert_array_equal(base_image(lr, msi, 4), upsample(lr, 4))
    np.testing.assert_array_equal(base_image(lr, msi, 4, "mtf_glp_hs", 1.2), mtf_glp_hs(lr, msi, 4, psf=gaussian_psf(4, 1.2)))
    with pytest.raises(ValueError, match="unknown conditioning base 'gsa'"):
        base_image(lr, msi, 4, "gsa")


def test_metadata_records_the_base():
    md = make_metadata(31, 3, base="mtf_glp_hs")
    again = ModelMetadata.from_json(md.to_json())
    assert again.base == "mtf_glp_hs" and "residual on mtf_glp_hs" in again.describe()
    assert ModelMetadata.from_json(make_metadata(31, 3).to_json()).base == "bicubic"
    with pytest.raises(ValueError, match="unknown conditioning base"):
        make_metadata(31, 3, base="nope")


def test_tiled_inference_on_a_global_base_has_no_tile_dependence(pair, tmp_path):
    """The base is computed once on the whole grid, so a per-pixel model gives the same result for any tiling."""
    ref, lr, msi = pair
    norms = dict(hsi_normalization=BandNormalization.fit(ref), msi_normalization=BandNormalization.fit(msi))
    glp_md = make_metadata(31, 3, base="mtf_glp_hs", psf_sigma=4 / 2.3548, **norms)
    # k = 0: the graph returns its lr_up input, so the sampler must end exactly on the conditioning image.
    glp_model = Denoiser(contract_model(tmp_path / "glp.onnx", glp_md, k_noisy=0.0, k_msi=0.0))
    bic_model = Denoiser(contract_model(tmp_path / "bic.onnx", make_metadata(31, 3, **norms), k_noisy=0.0, k_msi=0.0))
    kw = dict(steps=3, sampler="ddim", seed=1)
    whole, _, s1 = fuse_arrays(glp_model, lr, msi, 4, tile=96, overlap=0, **kw)
    tiled, _, s2 = fuse_arrays(glp_model, lr, msi, 4, tile=32, overlap=16, **kw)
    assert s1.tiles == 1 and s2.tiles > 4
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-4 * np.abs(whole).max())
    bic, _, _ = fuse_arrays(bic_model, lr, msi, 4, tile=96, overlap=0, **kw)
    np.testing.assert_allclose(whole, mtf_glp_hs(lr, msi, 4), atol=1e-5)
    np.testing.assert_allclose(bic, upsample(lr, 4), atol=1e-5)
