import json

import numpy as np
import pytest
import tifffile
import torch

from napari_cellboxify.data.images import read_image, read_pixel_size
from napari_cellboxify.evaluate import coco_eval, prediction_to_coco
from napari_cellboxify.data.coco import load_coco
from napari_cellboxify.data.synthetic import synthetic_cells
from napari_cellboxify.export import write_coco, write_label_tiff, write_measurements_csv
from napari_cellboxify.geometry import polygons_to_labels
from napari_cellboxify.model import build_model
from napari_cellboxify.predict import Prediction, Predictor

from conftest import tiny_config, write_synthetic_coco


class _GridModelStub(torch.nn.Module):
    """Stands in for the network in tiling tests: 'detects' fixed squares on a global grid.

    It reports each square that lies wholly inside the tile it is shown, in that tile's frame, the way a
    detector sees whole cells. Merging must give each square exactly once.
    """

    def __init__(self, model, grid: np.ndarray, shape):
        super().__init__()
        self.inner, self.grid, self.shape = model, grid, shape
        self.config, self.transform = model.config, model.transform
        self.offsets = []

    def forward(self, images, scale=None, paste=None):
        (img,) = images
        h, w = img.shape[-2:]
        y0, x0 = self.offsets.pop(0)
        boxes = self.grid - np.array([x0, y0, x0, y0])
        keep = (boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= w) & (boxes[:, 3] <= h)
        b = torch.tensor(boxes[keep], dtype=torch.float32)
        polys = torch.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], dim=1)
        return [{"boxes": b, "scores": torch.ones(len(b)), "polygons": polys}]


def test_tiles_merge_without_duplicates_on_a_tiled_real_image(livecell_dir):
    """A large image made by tiling a real LIVECell image 2x2; every cell must come back exactly once."""
    path = sorted((livecell_dir / "val" / "images").glob("*.tif"))[0]
    real = read_image(path)
    big = np.tile(real, (2, 2))
    rng = np.random.default_rng(0)
    h, w = big.shape
    xs, ys = rng.uniform(0, w - 40, 400), rng.uniform(0, h - 40, 400)
    grid = np.stack([xs, ys, xs + 30, ys + 30], axis=1)
    tile, overlap = 512, 96
    predictor = Predictor(build_model(tiny_config()).eval(), "cpu", score_threshold=0.0)
    stub = _GridModelStub(predictor.model, grid, big.shape)
    from napari_cellboxify.predict import _tile_starts

    stub.offsets = [(y0, x0) for y0 in _tile_starts(h, tile, tile - overlap) for x0 in _tile_starts(w, tile, tile - overlap)]
    predictor.model = stub
    predictor.config.model.box_nms_thresh = 0.99  # the squares may overlap: merging must not rely on NMS
    pred = predictor.segment_tiled(big, tile=tile, overlap=overlap)
    assert len(pred) == len(grid)
    got = pred.boxes_xyxy[np.lexsort(pred.boxes_xyxy.T[::-1])]
    want = grid[np.lexsort(grid.T[::-1])]
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_tiled_prediction_runs_the_real_model_on_a_tiled_real_image(livecell_dir):
    path = sorted((livecell_dir / "val" / "images").glob("*.tif"))[0]
    big = np.tile(read_image(path), (1, 2))
    config = tiny_config()
    config.model.box_score_thresh = 0.0
    predictor = Predictor(build_model(config).eval(), "cpu", score_threshold=0.0)
    pred = predictor.segment_tiled(big, tile=512, overlap=96)
    assert pred.shape == big.shape
    assert (pred.boxes_xyxy[:, 2] <= big.shape[1] + 1).all()


def test_boxes_on_a_large_image_are_outlined_in_crops_around_them(monkeypatch):
    # A few boxes on a large image: the network must not see the whole image (it took 9 GB and 45 s at 4096 px
    # for 60 boxes), only crops around the boxes, and every polygon must come back to its own box, in order.
    from napari_cellboxify.data.synthetic import synthetic_cells
    from napari_cellboxify.predict import MARGIN

    syn = synthetic_cells((600, 900), 30, seed=2)
    predictor = Predictor(build_model(tiny_config()).eval(), "cpu")
    crops = []
    outline = predictor._outline_normalised
    monkeypatch.setattr(predictor, "_outline_normalised",
                        lambda norm, boxes: crops.append((norm.shape, boxes)) or outline(norm, boxes))
    pred = predictor.segment_boxes(syn.image, syn.boxes_xyxy, window=256)
    assert len(crops) > 1 and sum(len(b) for _, b in crops) == len(syn.boxes_xyxy)
    for shape, boxes in crops:  # each crop holds its boxes with their context, and is a part of the image
        assert shape[0] * shape[1] < 600 * 900
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= shape[1]).all() and (boxes[:, 3] <= shape[0]).all()
        assert shape[0] <= 128 + 2 * MARGIN + (boxes[:, 3] - boxes[:, 1]).max() + 2
    np.testing.assert_array_equal(pred.boxes_xyxy, syn.boxes_xyxy)
    lo, hi = pred.polygons_xy.min(axis=1), pred.polygons_xy.max(axis=1)
    assert (lo >= syn.boxes_xyxy[:, :2] - 1e-3).all() and (hi <= syn.boxes_xyxy[:, 2:] + 1e-3).all()
    assert ((hi - lo) > 0.5 * (syn.boxes_xyxy[:, 2:] - syn.boxes_xyxy[:, :2])).all()  # outlines fill their boxes


def test_label_tiff_coco_and_csv_round_trip(tmp_path):
    polys = np.array([[[2, 2], [12, 2], [12, 10], [2, 10]], [[20, 5], [30, 5], [30, 25], [20, 25]]], np.float32)
    labels = polygons_to_labels(polys, (40, 40))
    write_label_tiff(tmp_path / "l.tif", labels)
    assert np.array_equal(tifffile.imread(tmp_path / "l.tif"), labels)
    write_coco(tmp_path / "c.json", [("img.tif", labels)])
    from pycocotools import mask as mask_utils

    coco = json.loads((tmp_path / "c.json").read_text())
    assert len(coco["annotations"]) == 2
    for ann in coco["annotations"]:
        assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), labels == ann["label"])
    image = np.arange(1600, dtype=np.float32).reshape(40, 40)
    write_measurements_csv(tmp_path / "m.csv", labels, image)
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["label", "area", "perimeter"] and "mean_intensity" in rows[0]
    assert rows[1].split(",")[1] == str((labels == 1).sum())
    # in µm, as napari places a calibrated image: 0.5 x 0.25 µm pixels, the image's corner at (100, 200) µm
    write_measurements_csv(tmp_path / "um.csv", labels, pixel_size=(0.5, 0.25), origin=(100, 200), unit="um")
    header, first = ((line.split(",")) for line in (tmp_path / "um.csv").read_text().splitlines()[:2])
    row = dict(zip(header, first))
    assert float(row["area_um2"]) == pytest.approx(int(row["area"]) * 0.125)
    assert float(row["centroid_y_um"]) == pytest.approx(100 + 0.5 * float(row["centroid_y"]))
    assert float(row["centroid_x_um"]) == pytest.approx(200 + 0.25 * float(row["centroid_x"]))
    assert "perimeter_um" not in row  # not a scaled copy on stretched pixels


def test_pixel_size_is_read_from_microscopy_tiffs_and_written_with_the_masks(tmp_path):
    # Sizes in µm need the file's own calibration: OME-XML (any length unit), ImageJ's unit + resolution, or
    # resolution tags in centimetres. Inches are what writers put by default (LIVECell: 1 pixel per inch) and
    # must not turn a pixel into 25,400 µm.
    plane = np.zeros((8, 10), np.uint16)
    tifffile.imwrite(tmp_path / "ome.tif", plane, ome=True,
                     metadata={"PhysicalSizeY": 325.0, "PhysicalSizeYUnit": "nm", "PhysicalSizeX": 0.65})
    tifffile.imwrite(tmp_path / "ij.tif", plane, imagej=True, resolution=(1 / 0.5, 1 / 0.25), metadata={"unit": "micron"})
    tifffile.imwrite(tmp_path / "cm.tif", plane, resolution=(1e4 / 1.3, 1e4 / 1.3), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "inch.tif", plane, resolution=(1, 1), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "ij_pixels.tif", plane, imagej=True, resolution=(1, 1), metadata={"unit": "pixel"})
    tifffile.imwrite(tmp_path / "cm_placeholder.tif", plane, resolution=(1, 1), resolutionunit="CENTIMETER")
    assert read_pixel_size(tmp_path / "ome.tif") == pytest.approx((0.325, 0.65))
    assert read_pixel_size(tmp_path / "ij.tif") == pytest.approx((0.25, 0.5))  # (height, width)
    assert read_pixel_size(tmp_path / "cm.tif") == pytest.approx((1.3, 1.3))
    for uncalibrated in ("inch.tif", "ij_pixels.tif", "cm_placeholder.tif", "missing.tif"):
        assert read_pixel_size(tmp_path / uncalibrated) is None, uncalibrated
    (tmp_path / "not_a_tiff.tif").write_bytes(b"plain text")
    assert read_pixel_size(tmp_path / "not_a_tiff.tif") is None

    labels = np.zeros((8, 10), np.uint16)
    labels[2:5, 3:7] = 1
    write_label_tiff(tmp_path / "labels.tif", labels, pixel_size=(0.25, 0.5))
    assert read_pixel_size(tmp_path / "labels.tif") == pytest.approx((0.25, 0.5))
    assert np.array_equal(tifffile.imread(tmp_path / "labels.tif"), labels)


def test_coco_eval_scores_crowded_images_at_2000_detections_and_masks_by_their_own_area():
    # LIVECell's images hold hundreds of cells: its evaluation reads AP at 2,000 detections per image.
    # pycocotools' summarize() reads its headline AP at 100 whenever 100 is among maxDets: the ground truth
    # itself scored AP 4.95 on a 2,127-cell image. And a segm detection's size range must come from its mask, not
    # from its box.
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    labels = np.zeros((160, 160), np.int32)
    for k in range(300):  # 300 cells of 6 x 6 px (area 36: "small", < 324)
        r, c = divmod(k, 20)
        labels[r * 8 + 1:r * 8 + 7, c * 8 + 1:c * 8 + 7] = k + 1
    anns, dets = [], []
    for k in range(1, 301):
        rle = mask_utils.encode(np.asfortranarray((labels == k).astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        box = [float(v) for v in mask_utils.toBbox(rle)]
        anns.append({"id": k, "image_id": 1, "category_id": 1, "segmentation": rle, "area": 36.0, "bbox": box,
                     "iscrowd": 0})
        # the exact mask, with a box far larger than it (as a loose detector box would be)
        dets.append({"image_id": 1, "category_id": 1, "segmentation": rle, "score": 1.0 - k / 1000,
                     "bbox": [box[0] - 20, box[1] - 20, box[2] + 40, box[3] + 40]})
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "height": 160, "width": 160}], "annotations": anns,
                  "categories": [{"id": 1, "name": "cell"}]}
    gt.createIndex()
    segm = coco_eval(gt, dets, "segm")
    assert segm["AP"] == pytest.approx(100.0) and segm["APs"] == pytest.approx(100.0)
    half = coco_eval(gt, dets[:150], "segm", sizes=False)  # half the cells found: AP ~ 50, not 100 / 300
    assert 45 < half["AP"] < 55 and half["AP"] == pytest.approx(half["AP50"])


def test_per_group_figures_from_one_matching_equal_scoring_each_group_alone(tmp_path):
    """Per-cell-type AP comes from the overall matching (coco_eval_by_group): it must equal COCOeval run on the
    group's images alone, for groups in any order of ids and for each kind and size range."""
    from napari_cellboxify.evaluate import coco_eval_by_group

    json_path, images_dir = write_synthetic_coco(tmp_path / "d", n_images=5, n_cells=10, seed=3)
    gt = load_coco(json_path, images_dir).pycocotools()
    rng = np.random.default_rng(1)
    dets = []
    for ann in gt.dataset["annotations"]:  # jittered detections whose quality differs by image, and misses
        x, y, w, h = ann["bbox"]
        jitter = ann["image_id"] / 10
        if rng.random() < 0.15 * ann["image_id"] / 2:
            continue
        dets.append({"image_id": ann["image_id"], "category_id": 1, "score": float(rng.random()),
                     "bbox": [x + rng.normal(0, w * jitter), y + rng.normal(0, h * jitter), w, h],
                     "segmentation": ann["segmentation"]})
    groups = {"odd": [5, 1, 3], "two": [2], "last": [4, 5]}
    for kind in ("bbox", "segm"):
        overall, per_group = coco_eval_by_group(gt, dets, kind, groups)
        assert overall == coco_eval(gt, dets, kind)
        assert len({round(g["AP"], 3) for g in per_group.values()}) == 3  # the groups really differ
        for name, ids in groups.items():
            alone = coco_eval(gt, dets, kind, ids)
            assert per_group[name] == pytest.approx(alone), name


def test_labels_need_uint32_past_65535():
    polys = np.zeros((1, 4, 2), np.float32)
    labels = polygons_to_labels(polys, (4, 4), ids=np.array([70000]))
    assert labels.dtype == np.uint32


def test_coco_eval_gives_100_for_the_ground_truth_itself(synthetic_coco):
    json_path, images_dir = synthetic_coco
    coco = load_coco(json_path, images_dir)
    gt = coco.pycocotools()
    dets = []
    for ann in gt.dataset["annotations"]:
        dets.append({"image_id": ann["image_id"], "category_id": 1, "bbox": ann["bbox"], "score": 1.0,
                     "segmentation": ann["segmentation"]})
    assert coco_eval(gt, dets, "segm")["AP"] == pytest.approx(100.0)
    assert coco_eval(gt, dets, "bbox")["AP50"] == pytest.approx(100.0)


def test_coco_eval_without_size_ranges_gives_the_same_ap(synthetic_coco):
    """``sizes=False`` (fit-zoom's fast path) must not change AP, AP50 or AP75: only the size breakdown goes."""
    json_path, images_dir = synthetic_coco
    gt = load_coco(json_path, images_dir).pycocotools()
    rng = np.random.default_rng(0)
    dets = []
    for ann in gt.dataset["annotations"]:  # shifted boxes with random scores, and one false positive per cell
        x, y, w, h = ann["bbox"]
        dets.append({"image_id": ann["image_id"], "category_id": 1, "score": float(rng.random()),
                     "bbox": [x + rng.normal(0, w / 6), y + rng.normal(0, h / 6), w, h]})
        dets.append({"image_id": ann["image_id"], "category_id": 1, "score": float(rng.random()),
                     "bbox": [x + 2 * w, y, w, h]})
    full, fast = coco_eval(gt, dets, "bbox"), coco_eval(gt, dets, "bbox", sizes=False)
    assert 5 < full["AP"] < 95
    for name in ("AP", "AP50", "AP75"):
        assert fast[name] == pytest.approx(full[name])
    assert fast["APs"] == fast["APm"] == fast["APl"] == 0.0


def test_prediction_to_coco_uses_rle():
    pred = Prediction(np.array([[[2, 2], [12, 2], [12, 10], [2, 10]]], np.float32), np.array([[2, 2, 12, 10]], np.float32),
                      np.array([0.9], np.float32), (20, 20))
    (det,) = prediction_to_coco(pred, 7)
    assert det["image_id"] == 7 and det["bbox"] == [2.0, 2.0, 10.0, 8.0] and "counts" in det["segmentation"]


def test_oracle_box_iou_counts_every_image_in_its_progress_also_those_without_masks(synthetic_coco):
    from napari_cellboxify.evaluate import oracle_box_iou

    json_path, images_dir = synthetic_coco
    data = json.loads(json_path.read_text())
    last = data["images"][-1]["id"]
    for ann in data["annotations"]:
        if ann["image_id"] == last:
            del ann["segmentation"]  # a box-only image: nothing to score, still one step of the progress bar
    json_path.write_text(json.dumps(data))
    coco = load_coco(json_path, images_dir)
    torch.manual_seed(0)
    predictor = Predictor(build_model(tiny_config(), load_pretrained=False), "cpu")
    calls = []
    result = oracle_box_iou(predictor, coco, progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (len(coco.images), len(coco.images)) and len(calls) == len(coco.images)
    assert result["num_cells"] == sum(1 for a in data["annotations"] if a["image_id"] != last)


def test_predictor_zoom_reaches_the_network_and_leaves_the_model_as_it_was():
    model = build_model(tiny_config(), load_pretrained=False)
    predictor = Predictor(model, "cpu")
    seen, real = [], model.transform.forward
    model.transform.forward = lambda images, targets=None, scale=None: (seen.append(scale), real(images, targets, scale))[1]
    predictor.image_scale = 2.0
    assert predictor.config.model.image_scale == 2.0
    with pytest.raises(ValueError, match="zoom"):
        predictor.image_scale = 0
    image = synthetic_cells((64, 48), 3, seed=1).image
    assert predictor.segment_image(image).shape == (64, 48)  # results stay in the image's own pixels
    twin = predictor.with_settings(image_scale=0.5, tta="flips")
    twin.segment_boxes(image, np.array([[4, 4, 20, 20]], np.float32))
    assert seen[0] == 2.0 and set(seen[1:]) == {0.5}
    # the model (shared by threads and predictors) and the first predictor keep their own settings
    assert model.transform.image_scale == model.config.model.image_scale == 1.0
    assert predictor.image_scale == 2.0 and predictor.tta == "off"
    with pytest.raises(TypeError, match="not a predictor setting"):
        predictor.with_settings(zoom=2)


def _gt_detections(coco) -> list[dict]:
    """Each annotation of ``coco`` as a perfect detection (its own box, and its mask when it has one)."""
    return [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
            | ({"segmentation": a["segmentation"]} if a.get("segmentation") else {})
            for a in coco.data["annotations"]]


def test_box_only_annotations_are_scored_on_boxes_and_say_why_masks_are_not(tmp_path):
    # A user's own annotations are boxes; evaluating against them used to fail with KeyError('segmentation').
    from napari_cellboxify.cli import format_metrics
    from napari_cellboxify.evaluate import evaluate_detections

    json_path, images_dir = write_synthetic_coco(tmp_path, n_images=2, n_cells=5, with_segmentation=False)
    coco = load_coco(json_path, images_dir)
    metrics = evaluate_detections(coco, _gt_detections(coco))
    assert metrics["bbox"]["AP"] == pytest.approx(100.0) and "segm" not in metrics
    assert "boxes only" in metrics["segm_skipped"]
    assert any(line.startswith("segm AP not computed: the annotations are boxes only") for line in format_metrics(metrics))

    data = json.loads(json_path.read_text())  # one traced cell among boxes: still not a fair mask score
    data["annotations"][0]["segmentation"] = [[0, 0, 4, 0, 4, 4, 0, 4]]
    json_path.write_text(json.dumps(data))
    metrics = evaluate_detections(load_coco(json_path, images_dir), _gt_detections(coco))
    assert "segm" not in metrics and metrics["segm_skipped"].startswith("9 of 10 annotations have no 'segmentation'")


def test_traced_annotations_are_scored_on_masks_too(tmp_path):
    from napari_cellboxify.evaluate import evaluate_detections

    json_path, images_dir = write_synthetic_coco(tmp_path, n_images=1, n_cells=5)
    coco = load_coco(json_path, images_dir)
    metrics = evaluate_detections(coco, _gt_detections(coco))
    assert metrics["segm"]["AP"] == pytest.approx(100.0) and "segm_skipped" not in metrics


def test_evaluation_without_cells_or_masks_is_refused_with_the_reason(tmp_path):
    from napari_cellboxify.evaluate import evaluate, oracle_box_iou

    json_path, images_dir = write_synthetic_coco(tmp_path, n_images=1, n_cells=3, with_segmentation=False)
    with pytest.raises(ValueError, match="no annotation has a mask"):
        oracle_box_iou(None, load_coco(json_path, images_dir))  # refused before any model is needed
    data = json.loads(json_path.read_text())
    json_path.write_text(json.dumps(dict(data, annotations=[])))
    with pytest.raises(ValueError, match="no annotated cells to evaluate against"):
        evaluate(None, load_coco(json_path, images_dir))


def test_image_planes_splits_stacks_and_keeps_colour_together():
    from napari_cellboxify.data.images import image_planes

    gray, rgb = np.zeros((6, 7)), np.zeros((6, 7, 3))
    assert [(i, p.shape) for i, p in image_planes(gray)] == [((), (6, 7))]
    assert [(i, p.shape) for i, p in image_planes(rgb)] == [((), (6, 7, 3))]
    stack = np.arange(2 * 3 * 6 * 7).reshape(2, 3, 6, 7)
    planes = image_planes(stack)
    assert [i for i, _ in planes] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    np.testing.assert_array_equal(planes[4][1], stack[1, 1])
    assert [p.shape for _, p in image_planes(np.zeros((4, 6, 7, 4)))] == [(6, 7, 4)] * 4  # an RGBA movie
