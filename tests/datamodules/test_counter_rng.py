"""The counter-based random source: what each item's stream promises."""
import numpy as np

from datamodules.counter_rng import ItemStreams


def test_normals_are_standard_per_item_and_independent_of_the_batch():
    streams = ItemStreams(7, "val", range(64))
    z = streams.normal(3, 10001)  # (B, n), an odd n: the last pair is cut
    assert z.shape == (64, 10001) and z.dtype == np.float32
    assert abs(z.mean()) < 0.005 and abs(z.std() - 1.0) < 0.005  # 640k draws: se of the mean 0.0013
    assert abs((z > 1.96).mean() - 0.025) < 0.002  # the tail, not just the first two moments
    assert np.isfinite(z).all() and np.abs(z).max() <= np.sqrt(2 * np.log(2.0 ** 24)) + 1e-4
    # cosine and sine halves of one pair are uncorrelated
    assert abs(np.corrcoef(z[:, :5000].ravel(), z[:, 5001:].ravel())[0, 1]) < 0.005
    # item 10's numbers are the same alone, in another batch, and in another order
    alone = ItemStreams(7, "val", [10]).normal(3, 10001)[0]
    np.testing.assert_array_equal(alone, z[10])
    np.testing.assert_array_equal(ItemStreams(7, "val", [30, 10]).normal(3, 10001)[1], z[10])
    assert not np.array_equal(ItemStreams(8, "val", [10]).normal(3, 10001)[0], alone)  # another data seed
