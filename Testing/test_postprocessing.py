"""Connected-component cleanup of predicted label maps (``inference.keep_largest_per_class``)."""

import numpy as np

from SemiSupCardiacSegLib.inference import keep_largest_per_class, largest_component


def test_largest_component_by_voxels_is_26_connected_and_keeps_empty_masks():
    m = np.zeros((10, 10, 10), bool)
    m[1, 1, 1] = m[2, 2, 2] = True  # corner neighbours: one 26-connected component of 2 voxels
    m[6:8, 6:8, 6] = True  # 4 voxels
    kept = largest_component(m)
    assert kept.sum() == 4 and kept[6, 6, 6]
    m[3, 3, 3] = m[4, 4, 4] = m[5, 5, 5] = True  # a diagonal chain joins both into one component
    assert largest_component(m).sum() == m.sum()
    assert not largest_component(np.zeros((4, 4, 4), bool)).any()


def test_component_of_largest_probability_mass_beats_a_larger_doubtful_one():
    labels = np.zeros((20, 20, 4), np.uint8)
    labels[1:5, 1:5, :2] = 1  # 32 voxels, confident
    labels[10:16, 10:16, :2] = 1  # 72 voxels, doubtful
    labels[1:3, 15:19, 0] = 2  # class 2: one component, kept whatever the rule
    probs = np.zeros((3,) + labels.shape, np.float32)
    probs[1][1:5, 1:5, :2] = 0.95
    probs[1][10:16, 10:16, :2] = 0.36
    probs[2][labels == 2] = 0.9
    probs[0] = 1.0 - probs[1] - probs[2]
    by_count = keep_largest_per_class(labels, 3)
    by_mass = keep_largest_per_class(labels, 3, probs)
    assert (by_count == 1).sum() == 72 and by_count[12, 12, 0] == 1  # 72 voxels > 32
    assert (by_mass == 1).sum() == 32 and by_mass[2, 2, 0] == 1  # 32 x 0.95 = 30.4 > 72 x 0.36 = 25.9
    assert (by_mass == 2).sum() == (by_count == 2).sum() == (labels == 2).sum()
