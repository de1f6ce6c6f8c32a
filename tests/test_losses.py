import math

import numpy as np
import torch

from napari_cellboxify.geometry import polygon_to_mask
from napari_cellboxify.losses import combine_losses, pairwise_warmup
from napari_cellboxify.losses.mask import mask_loss
from napari_cellboxify.losses.pairwise import global_pairwise_loss, local_pairwise_loss
from napari_cellboxify.losses.rasterize import soft_rasterize_logits
from napari_cellboxify.losses.fill import fill_prior_loss, polygon_areas
from napari_cellboxify.losses.unary import polygon_boxes, unary_loss
from napari_cellboxify.model.polygon_head import box_to_image, superellipse_contour
from napari_cellboxify.config import LossConfig


def _square(x1, y1, x2, y2):
    return torch.tensor([[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]], dtype=torch.float32)


# ---- unary ---------------------------------------------------------------------------------------------------
def test_unary_is_zero_for_identical_boxes():
    poly = _square(10, 10, 30, 40)
    assert float(unary_loss(poly, torch.tensor([[10.0, 10, 30, 40]]))) < 1e-6


def test_unary_matches_hand_computed_ciou_for_a_shifted_box():
    # pred [0,0,2,2], gt [1,0,3,2]: IoU = 2/6; centre distance^2 = 1; enclosing diagonal^2 = 3^2+2^2 = 13;
    # same aspect ratio -> v = 0.  CIoU loss = 1 - IoU + d^2/c^2 = 1 - 1/3 + 1/13.
    poly = _square(0, 0, 2, 2)
    expected = 1 - 1 / 3 + 1 / 13
    assert math.isclose(float(unary_loss(poly, torch.tensor([[1.0, 0, 3, 2]]))), expected, rel_tol=1e-4)


def test_unary_matches_hand_computed_ciou_for_a_scaled_box():
    # pred [0,0,4,2] (w/h=2), gt [0,0,2,2] (w/h=1): IoU = 4/8; centre d^2 = 1; c^2 = 16+4 = 20;
    # v = 4/pi^2 (atan 2 - atan 1)^2, alpha = v / (1 - IoU + v).
    v = 4 / math.pi**2 * (math.atan(2) - math.atan(1)) ** 2
    alpha = v / (1 - 0.5 + v)
    expected = 1 - 0.5 + 1 / 20 + alpha * v
    got = float(unary_loss(_square(0, 0, 4, 2), torch.tensor([[0.0, 0, 2, 2]])))
    assert math.isclose(got, expected, rel_tol=1e-4)


def test_unary_gradient_moves_vertices_towards_the_box():
    # a diamond: each side of its box is touched by one vertex, which alone gets that side's gradient
    poly = torch.tensor([[[15.0, 5.0], [25.0, 15.0], [15.0, 25.0], [5.0, 15.0]]], requires_grad=True)
    gt = torch.tensor([[10.0, 10, 20, 20]])
    unary_loss(poly, gt).backward()
    assert (poly.grad[0, 0, 1] < 0) and (poly.grad[0, 1, 0] > 0)  # top vertex moves down, right vertex left
    stepped = poly.detach() - 2.0 * poly.grad / poly.grad.abs().max()
    before = (polygon_boxes(poly.detach()) - gt).abs().sum()
    after = (polygon_boxes(stepped) - gt).abs().sum()
    assert after < before


def test_polygon_boxes():
    poly = torch.tensor([[[3.0, 4.0], [10.0, 1.0], [7.0, 9.0]]])
    assert polygon_boxes(poly).tolist() == [[3.0, 1.0, 10.0, 9.0]]


# ---- box-fill prior ---------------------------------------------------------------------------------------------
def test_polygon_areas_match_the_shoelace_by_hand_in_either_orientation():
    square = _square(0, 0, 4, 2)
    assert polygon_areas(square).tolist() == [8.0]
    assert polygon_areas(square.flip(1)).tolist() == [8.0]
    triangle = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [0.0, 3.0]]])
    assert polygon_areas(triangle).tolist() == [6.0]


def test_fill_prior_is_zero_for_convex_shapes_and_positive_for_a_star():
    box = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    ellipse = box_to_image(superellipse_contour(64, 2.0)[None], box)  # fills pi/4 of the box
    diamond = box_to_image(superellipse_contour(64, 1.0)[None], box)  # fills 1/2: the convex bound itself
    star = box_to_image(superellipse_contour(64, 0.6)[None], box)  # concave, touches the four sides
    assert float(fill_prior_loss(ellipse, box)) == 0.0
    assert float(fill_prior_loss(diamond, box)) < 1e-3
    fill = float(polygon_areas(star)[0]) / (40 * 20)
    assert math.isclose(float(fill_prior_loss(star, box)), 0.5 - fill, rel_tol=1e-5) and fill < 0.4


def test_fill_prior_gradient_grows_a_shrunken_polygon():
    box = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    small = _square(8, 8, 12, 12).requires_grad_(True)  # fills 4 % of its box
    fill_prior_loss(small, box).backward()
    grown = small.detach() - 10.0 * small.grad
    assert polygon_areas(grown)[0] > polygon_areas(small.detach())[0]


def test_fill_prior_of_no_polygons_is_zero_and_keeps_the_graph():
    loss = fill_prior_loss(torch.zeros(0, 8, 2, requires_grad=True), torch.zeros(0, 4))
    assert float(loss) == 0.0 and loss.requires_grad


# ---- pairwise ------------------------------------------------------------------------------------------------
def _two_region_crop(size=64):
    """A bright disk (the 'cell') on a dark background, with a little noise."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    disk = (xx - 32) ** 2 + (yy - 32) ** 2 < 20**2
    rng = np.random.default_rng(0)
    image = np.where(disk, 0.8, 0.2) + rng.normal(0, 0.01, disk.shape)
    return torch.tensor(image, dtype=torch.float32)[None], disk


def _circle(cx, cy, r, n=64):
    t = torch.linspace(0, 2 * math.pi, n + 1)[:-1]
    return torch.stack([cx + r * torch.cos(t), cy + r * torch.sin(t)], dim=1)[None]


def test_local_pairwise_prefers_the_true_boundary():
    image, _ = _two_region_crop()
    inside = torch.ones(1, 64, 64, dtype=torch.bool)
    true = local_pairwise_loss(soft_rasterize_logits(_circle(32, 32, 20), 64, 0.5), image, inside)
    cutting = local_pairwise_loss(soft_rasterize_logits(_circle(20, 32, 20), 64, 0.5), image, inside)
    assert true < cutting


def test_local_pairwise_ignores_pairs_outside_the_box():
    image, _ = _two_region_crop()
    logits = soft_rasterize_logits(_circle(20, 32, 20), 64, 0.5)
    nowhere = torch.zeros(1, 64, 64, dtype=torch.bool)
    assert float(local_pairwise_loss(logits, image, nowhere)) == 0.0


def test_global_pairwise_is_lower_for_the_true_shape():
    image, _ = _two_region_crop()
    true = global_pairwise_loss(soft_rasterize_logits(_circle(32, 32, 20), 64, 0.5), image)
    shrunk = global_pairwise_loss(soft_rasterize_logits(_circle(32, 32, 12), 64, 0.5), image)
    shifted = global_pairwise_loss(soft_rasterize_logits(_circle(24, 32, 20), 64, 0.5), image)
    assert true < shrunk and true < shifted


def test_normalised_global_pairwise_ignores_the_crops_contrast():
    # Normalised by the crop's variance, the energy is 1 - Otsu's separability: a faint and a strong image of the
    # same cell cost the same, so gamma means the same on every cell type. The raw energy scales with contrast^2.
    image, _ = _two_region_crop()
    logits = soft_rasterize_logits(_circle(30, 32, 16), 64, 0.5)
    strong, faint = global_pairwise_loss(logits, image), global_pairwise_loss(logits, 0.1 * image + 0.4)
    assert math.isclose(float(strong), float(faint), rel_tol=1e-4) and 0 < float(strong) < 1
    raw_strong = global_pairwise_loss(logits, image, normalize=False)
    raw_faint = global_pairwise_loss(logits, 0.1 * image + 0.4, normalize=False)
    assert math.isclose(float(raw_faint), 0.01 * float(raw_strong), rel_tol=1e-3)


def test_global_pairwise_gradient_grows_a_too_small_contour():
    image, _ = _two_region_crop()
    poly = _circle(32, 32, 14).requires_grad_(True)
    global_pairwise_loss(soft_rasterize_logits(poly, 64, 1.0), image).backward()
    radial = poly.detach()[0] - 32
    # gradient descent moves each vertex along -grad: outward means -grad . radial > 0
    outward = -(poly.grad[0] * radial).sum(dim=1)
    assert (outward > 0).float().mean() > 0.9


def test_mask_loss_is_lower_for_the_true_shape():
    _, disk = _two_region_crop()
    target = torch.tensor(disk, dtype=torch.float32)[None]
    true = mask_loss(soft_rasterize_logits(_circle(32, 32, 20), 64, 0.5), target)
    wrong = mask_loss(soft_rasterize_logits(_circle(20, 32, 14), 64, 0.5), target)
    assert true < wrong


# ---- combination ---------------------------------------------------------------------------------------------
def test_pairwise_warmup_ramps_over_the_given_steps():
    assert pairwise_warmup(0, 100) == 0.01
    assert pairwise_warmup(49, 100) == 0.5
    assert pairwise_warmup(500, 100) == 1.0
    assert pairwise_warmup(0, 0) == 1.0


def test_combine_losses_weights_each_term():
    cfg = LossConfig(unary_weight=2.0, local_weight=0.5, global_weight=0.1, fill_weight=3.0, pairwise_warmup_steps=0)
    terms = {"loss_classifier": torch.tensor(1.0), "loss_unary": torch.tensor(1.0), "loss_fill": torch.tensor(1.0),
             "loss_local": torch.tensor(1.0), "loss_global": torch.tensor(1.0)}
    assert math.isclose(float(combine_losses(terms, cfg, step=10)), 1 + 2 + 3 + 0.5 + 0.1, rel_tol=1e-6)
    # during the ramp only the pairwise terms are scaled; a fine-tuning run (warmup 0) gets them in full
    assert math.isclose(float(combine_losses(terms, cfg, step=1, warmup_steps=4)), 1 + 2 + 3 + 0.3, rel_tol=1e-6)
    assert math.isclose(float(combine_losses(terms, cfg, step=1, warmup_steps=0)), 1 + 2 + 3 + 0.6, rel_tol=1e-6)


def test_polygon_to_mask_uses_pixel_centres():
    mask = polygon_to_mask(np.array([[0, 0], [4, 0], [4, 3], [0, 3]], dtype=float), (10, 10))
    assert mask.sum() == 12 and mask[:3, :4].all()


def test_local_pairwise_makes_a_filled_box_pay_for_cutting_uniform_background():
    # A cell on uniform background, GT box [10, 54]^2 inside a padded 64 px crop. With pairs only inside the box,
    # the filled box is the loss's minimum (every inside pair agrees); pairs that straddle the box edge make it
    # pay for cutting through similar background pixels, so the true disk must win.
    image, _ = _two_region_crop()
    inside = torch.zeros(1, 64, 64, dtype=torch.bool)
    inside[:, 10:54, 10:54] = True
    box = torch.tensor([[[10.0, 10.0], [54.0, 10.0], [54.0, 54.0], [10.0, 54.0]]])
    true = local_pairwise_loss(soft_rasterize_logits(_circle(32, 32, 20), 64, 0.5), image, inside)
    filled = local_pairwise_loss(soft_rasterize_logits(box, 64, 0.5), image, inside)
    assert true < filled


def test_local_contrast_is_high_on_texture_and_low_on_flat_background():
    from napari_cellboxify.losses.pairwise import local_contrast

    rng = np.random.default_rng(0)
    image = np.full((1, 1, 64, 64), 0.5, np.float32)
    image[..., 16:48, 16:48] += rng.normal(0, 0.1, (32, 32)).astype(np.float32)  # textured 'cell', same mean
    contrast = local_contrast(torch.from_numpy(image))
    assert contrast.shape == (1, 1, 64, 64)
    assert float(contrast[..., 24:40, 24:40].mean()) > 0.3
    assert float(contrast[..., :8, :8].max()) < 1e-3
