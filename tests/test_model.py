import copy

import torch

from napari_cellboxify.config import CellBoxifyConfig
from napari_cellboxify.data.synthetic import synthetic_cells
from napari_cellboxify.data.transforms import normalize_image, to_model_input
from napari_cellboxify.model import build_model
from napari_cellboxify.model.polygon_head import initial_contour

from conftest import tiny_config


def test_default_model_is_r50_fpn_with_the_papers_anchors():
    c = CellBoxifyConfig()
    c.model.pretrained_backbone = False
    m = build_model(c)
    gen = m.rpn.anchor_generator
    assert [s[0] for s in gen.sizes] == [8, 16, 32, 64, 128]
    assert all(tuple(a) == (0.5, 1.0, 2.0, 3.0, 4.0) for a in gen.aspect_ratios)
    assert m.rpn._post_nms_top_n["testing"] == 3000
    assert m.roi_heads.detections_per_img == 2000
    assert type(m.backbone.body.layer4[0]).__name__ == "Bottleneck"  # ResNet-50 blocks
    assert m.roi_heads.polygon_head.init_contour.shape == (64, 2)


def test_pretrained_weights_fall_back_with_a_clear_warning(monkeypatch):
    import torchvision.models.resnet as resnet_module
    import warnings

    c = tiny_config()
    c.model.pretrained_backbone = True
    c.model.norm = "frozen_bn"

    def offline(*args, **kwargs):
        if kwargs.get("weights") is not None:
            raise OSError("no network")
        return original(*args, **kwargs)

    from napari_cellboxify.model import detector

    original = resnet_module.resnet18
    monkeypatch.setitem(detector._RESNETS, "resnet18", (offline, detector._RESNETS["resnet18"][1]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = build_model(c)
    assert not m.pretrained_loaded
    assert any("could not load ImageNet weights" in str(w.message) for w in caught)
    assert all(p.requires_grad for p in m.backbone.body.parameters())  # random layers must all train


def test_training_returns_every_loss_term_and_backpropagates():
    c = tiny_config()
    m = build_model(c).train()
    syn = synthetic_cells((96, 96), 5, seed=1)
    image = to_model_input(normalize_image(syn.image))
    target = {"boxes": torch.from_numpy(syn.boxes_xyxy), "labels": torch.ones(len(syn.boxes_xyxy), dtype=torch.int64)}
    losses = m([image], [target])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
                           "loss_unary", "loss_local", "loss_global", "loss_fill"}
    sum(losses.values()).backward()
    assert m.roi_heads.polygon_head.stages[0].out.weight.grad.abs().sum() > 0
    assert losses["loss_fill"].requires_grad
    c.loss.fill_weight = 0.0  # the box-fill prior is a term of its own only when it is on
    losses = build_model(c).train()([image], [target])
    assert "loss_fill" not in losses


def test_each_refinement_stage_counts_once_in_every_polygon_term():
    # The stages are scored in one pass (stacked); each term must equal the mean of the term scored on each
    # stage alone, in box and in mask mode.
    syn = synthetic_cells((96, 96), 5, seed=1)
    image = to_model_input(normalize_image(syn.image))
    target = {"boxes": torch.from_numpy(syn.boxes_xyxy), "labels": torch.ones(len(syn.boxes_xyxy), dtype=torch.int64),
              "masks": torch.from_numpy(syn.masks())}
    for supervision, terms in (("box", ("loss_unary", "loss_local", "loss_global")), ("mask", ("loss_mask",))):
        c = tiny_config()
        c.model.refine_stages = 3
        c.loss.supervision = supervision
        m = build_model(c).train()
        head = m.roi_heads.polygon_head
        for stage in head.stages:  # zero-initialised offsets would make the three stages the same polygon
            torch.nn.init.normal_(stage.out.weight, std=0.05)
        every_stage = head.forward

        def losses_of(stages):
            head.forward = lambda features: [every_stage(features)[i] for i in stages]
            torch.manual_seed(0)  # the same proposals and samples in every call
            with torch.no_grad():
                return m([image], [target])

        together = losses_of([0, 1, 2])
        alone = [losses_of([i]) for i in range(3)]
        assert len({round(float(a["loss_global" if supervision == "box" else "loss_mask"]), 6) for a in alone}) == 3
        for term in terms:
            mean = sum(float(a[term]) for a in alone) / 3
            assert abs(float(together[term]) - mean) <= 1e-5 * max(1.0, abs(mean)), (supervision, term)


def test_a_second_pass_at_inference_runs_the_same_stages_from_the_first_pass_polygons():
    from napari_cellboxify.model.polygon_head import PolygonHead

    torch.manual_seed(0)
    one = PolygonHead(8, channels=16, num_vertices=16, stages=2)
    for stage in one.stages:  # zero-initialised offsets would leave every polygon at the start contour
        torch.nn.init.normal_(stage.out.weight, std=0.05)
    two = PolygonHead(8, channels=16, num_vertices=16, stages=2, passes=2)
    two.load_state_dict(one.state_dict())  # passes add no weights
    features = torch.rand(3, 8, 7, 7)
    assert len(two(features)) == 2  # training supervises one pass
    one.eval(), two.eval()
    with torch.no_grad():
        first, both = one(features), two(features)
        assert len(first) == 2 and len(both) == 4
        assert all(torch.equal(a, b) for a, b in zip(first, both[:2]))
        again = one.stages[0](one.trunk(features), first[-1])
    assert torch.allclose(both[2], again) and not torch.allclose(both[3], both[1], atol=1e-4)

    c = tiny_config()
    c.model.refine_passes = 3
    assert build_model(c).roi_heads.polygon_head.passes == 3


def test_mask_mode_uses_the_same_network_with_the_mask_loss():
    c = tiny_config()
    box_model = build_model(c)
    c.loss.supervision = "mask"
    m = build_model(c).train()
    assert [k for k in m.state_dict()] == [k for k in box_model.state_dict()]
    syn = synthetic_cells((96, 96), 5, seed=1)
    target = {"boxes": torch.from_numpy(syn.boxes_xyxy), "labels": torch.ones(len(syn.boxes_xyxy), dtype=torch.int64),
              "masks": torch.from_numpy(syn.masks())}
    losses = m([to_model_input(normalize_image(syn.image))], [target])
    assert "loss_mask" in losses and "loss_local" not in losses
    assert float(losses["loss_mask"]) > 0


def test_inference_returns_polygons_and_full_resolution_masks():
    c = tiny_config()
    c.model.box_score_thresh = 0.0
    m = build_model(c).eval()
    with torch.no_grad():
        out = m([torch.rand(3, 100, 130)])[0]
    n = len(out["boxes"])
    assert n > 0
    assert out["polygons"].shape == (n, 16, 2)
    assert out["masks"].shape == (n, 1, 100, 130) and out["masks"].dtype == torch.bool


def test_untrained_head_returns_the_initial_contour_inside_each_box():
    c = tiny_config()
    m = build_model(c).eval()
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [60.0, 5.0, 90.0, 70.0]])
    polys = m.segment_boxes([torch.rand(3, 96, 96)], [boxes])[0]
    init = initial_contour(16)
    expected = boxes[:, None, :2] + init[None] * (boxes[:, None, 2:] - boxes[:, None, :2])
    torch.testing.assert_close(polys, expected)


def test_polygons_are_clipped_into_their_box_unless_switched_off():
    c = tiny_config()
    m = build_model(c).eval()
    with torch.no_grad():  # a head that pushes every vertex half a box to the lower right: past the box
        m.roi_heads.polygon_head.stages[-1].out.bias.fill_(5.0)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [60.0, 5.0, 90.0, 70.0]])
    image = torch.rand(3, 96, 96)
    clipped = m.segment_boxes([image], [boxes])[0]
    assert (clipped >= boxes[:, None, :2] - 1e-4).all() and (clipped <= boxes[:, None, 2:] + 1e-4).all()
    m.roi_heads.clip_to_box = False
    free = m.segment_boxes([image], [boxes])[0]
    assert (free > boxes[:, None, 2:] + 1).any()  # without the clip the same head leaves its boxes


def test_image_scale_maps_results_back_to_the_input_frame():
    c = tiny_config()
    c.model.image_scale = 2.0
    m = build_model(c).eval()
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    polys = m.segment_boxes([torch.rand(3, 64, 64)], [boxes])[0]
    assert polys[..., 0].min() >= 9.9 and polys[..., 0].max() <= 50.1


def test_zoom_and_mask_pasting_are_per_call_and_leave_the_model_as_it_was():
    c = tiny_config()
    c.model.box_score_thresh = 0.0
    torch.manual_seed(0)
    model = build_model(c, load_pretrained=False).eval()
    zoomed = copy.deepcopy(c)
    zoomed.model.image_scale, zoomed.model.paste_masks = 2.0, False
    twin = build_model(zoomed, load_pretrained=False).eval()
    twin.load_state_dict(model.state_dict())
    image = torch.rand(3, 64, 64)
    with torch.no_grad():
        per_call, built = model([image], scale=2.0, paste=False)[0], twin([image])[0]
        default = model([image])[0]
    assert len(per_call["boxes"]) and torch.equal(per_call["boxes"], built["boxes"]) and "masks" not in per_call
    assert "masks" in default and not torch.equal(default["boxes"], per_call["boxes"])
    assert model.transform.image_scale == 1.0 and model.transform.paste_masks


def test_snake_convolutions_are_circular_along_the_contour():
    # The stages pad by hand (one cat) what Conv1d's padding_mode="circular" pads with many copies: same numbers,
    # so files trained either way load and run alike.
    from torch import nn

    from napari_cellboxify.model.polygon_head import circular_pad

    torch.manual_seed(0)
    circular = nn.Conv1d(8, 8, 9, padding=4, padding_mode="circular")
    plain = nn.Conv1d(8, 8, 9)
    plain.load_state_dict(circular.state_dict())
    x = torch.randn(3, 8, 64)
    assert torch.allclose(plain(circular_pad(x, 4)), circular(x), atol=1e-6)
    assert circular_pad(torch.arange(5.0)[None, None], 2).flatten().tolist() == [3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert torch.equal(circular_pad(x, 0), x)
