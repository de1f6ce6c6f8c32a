import numpy as np
import torch

from napari_cellboxify.geometry import polygon_to_mask
from napari_cellboxify.losses.rasterize import polygons_to_box_frame, soft_rasterize


def _iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


CONVEX = np.array([[10, 8], [50, 12], [56, 40], [30, 58], [8, 40]], dtype=np.float32)
CONCAVE = np.array([[8, 8], [56, 8], [56, 56], [32, 24], [8, 56]], dtype=np.float32)  # a "V" notch


def test_soft_raster_matches_exact_rasterisation_as_smoothness_goes_hard():
    for poly in (CONVEX, CONCAVE):
        exact = polygon_to_mask(poly, (64, 64))
        for tau in (0.1, 0.01):
            soft = soft_rasterize(torch.from_numpy(poly)[None], 64, inv_smoothness=tau)[0].numpy()
            assert _iou(soft > 0.5, exact) > 0.95


def test_concave_notch_is_outside():
    soft = soft_rasterize(torch.from_numpy(CONCAVE)[None], 64, 0.1)[0]
    assert soft[50, 32] < 0.01  # inside the notch of the V: outside the polygon
    assert soft[12, 32] > 0.99


def test_gradient_reaches_vertices_and_grows_the_polygon_towards_a_target():
    poly = torch.tensor(CONVEX * 0.6 + 10, requires_grad=True)
    target = torch.from_numpy(polygon_to_mask(CONVEX, (64, 64))).float()
    soft = soft_rasterize(poly[None], 64, 1.0)[0]
    loss = ((soft - target) ** 2).sum()
    loss.backward()
    assert poly.grad is not None and poly.grad.abs().sum() > 0
    stepped = poly.detach() - 0.5 * poly.grad / poly.grad.abs().max()
    soft2 = soft_rasterize(stepped[None], 64, 1.0)[0]
    assert ((soft2 - target) ** 2).sum() < loss.detach()


def test_box_frame_maps_box_corners_to_grid_corners():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    poly = torch.tensor([[[10.0, 20.0], [30.0, 60.0]]])
    out = polygons_to_box_frame(poly, boxes, 64, padding=0.0)
    assert torch.allclose(out, torch.tensor([[[0.0, 0.0], [64.0, 64.0]]]))


def test_edges_in_chunks_give_the_same_distances_signs_and_nearest_edges_as_one_at_a_time():
    # The chunked formulation runs on accelerators only; here both run on the CPU, on convex, concave and
    # degenerate outlines (repeated vertices, as clipping into a box makes) that cross the grid's border.
    from napari_cellboxify.losses.rasterize import _nearest_edges_by_edge, _nearest_edges_chunked

    torch.manual_seed(0)
    theta = torch.linspace(0, 2 * np.pi, 33)[:-1]
    radius = 14 + 10 * torch.rand(6, 32)
    wobbly = torch.stack([30 + radius * torch.cos(theta), 34 + radius * torch.sin(theta)], -1)
    batches = (wobbly, wobbly.clamp(4.0, 40.0), torch.from_numpy(CONCAVE)[None])
    for polys in batches:
        reference = _nearest_edges_by_edge(polys, 48)
        assert reference[3].eq(1).any() and reference[3].eq(-1).any()
        for chunk in (1, 5, 32, 100):
            for ref, got in zip(reference, _nearest_edges_chunked(polys, 48, chunk)):
                assert torch.equal(ref, got), chunk
