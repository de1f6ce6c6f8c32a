"""Fine-tuning from a few boxes: which recipe helps the cells the user did not box.

A biologist boxes the cells in one corner of an image (a few dozen), then wants the rest of that image and the
next image of the same cells segmented. For one livecell-mini *train* image of each cell type that *val* also
has, the cells whose centre lies in the top-left quarter are the user's boxes; every arm starts from the shipped
default weights:

- no fine-tuning, at the weights' own zoom;
- the zoom fitted to the quarter's boxes (*Fit zoom to my boxes*, zoom_fit.py), no training;
- that zoom, then the panel's *Fine-tune* (200 steps, Adam 1e-4, 2 crops, inside the boxed area) training
  every weight (``train.trainable = "all"``), only the heads (``"heads"``: trunk and FPN kept as loaded),
  every weight at a tenth of the learning rate, everything but the mask branch (``"detector"``), or only the
  RPN and box head (``"box_heads"``); ``--recipes`` picks some of them.

Each arm is scored (bbox and segm AP, LIVECell's COCO settings) on the *rest* of the same image (the cells whose
centre lies outside the quarter, and the detections likewise: what the user asked for) and on the val image of
the same cell type (the next image of those cells). Same seed for every arm.

    python benchmarks/bench_few_boxes.py [--images A172_Phase_C7_1_00d20h00m_4.tif ...] [--steps 200] [--seed 0]
        [--recipes all heads all_lr1e-5 detector box_heads]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import LIVECELL_MINI, livecell_mini_missing, write_section  # noqa: E402
from bench_partial_boxes import in_quarter, quarter_boxes  # noqa: E402

# One train image per cell type that val also holds (MCF7 has no val image).
IMAGES = ("A172_Phase_C7_1_00d20h00m_4.tif", "BT474_Phase_D3_2_03d16h00m_1.tif", "SKOV3_Phase_E4_1_00d00h00m_1.tif",
          "Huh7_Phase_A10_1_02d12h00m_3.tif")
# name -> (row label, config.train overrides) of the fine-tuning arms; all run at the fitted zoom.
RECIPES = {
    "all": ("fine-tune, all weights (the panel's recipe until 2026-11-28)", {"trainable": "all"}),
    "heads": ("fine-tune, heads only (trunk and FPN kept)", {"trainable": "heads"}),
    "all_lr1e-5": ("fine-tune, all weights at lr 1e-5", {"trainable": "all", "lr": 1e-5}),
    "detector": ("fine-tune, detector only (mask branch kept)", {"trainable": "detector"}),
    "box_heads": ("fine-tune, RPN and box head only (the panel's recipe from 2026-11-28)",
                  {"trainable": "box_heads"}),
}


def rest_of_image(coco_data: dict, image_id: int, shape: tuple[int, int]) -> dict:
    """A COCO dict of one image with only its annotations outside the top-left quarter."""
    anns = [a for a in coco_data["annotations"] if a["image_id"] == image_id]
    boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                      for a in anns]).reshape(-1, 4)
    keep = ~in_quarter(boxes, shape)
    return {"images": [im for im in coco_data["images"] if im["id"] == image_id],
            "annotations": [a for a, k in zip(anns, keep) if k], "categories": coco_data["categories"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=list(IMAGES), help="livecell-mini train images")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps per arm (the panel's default)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every arm (replicates)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES),
                        help="fine-tuning arms to run (default: all of them)")
    parser.add_argument("--data", type=Path, default=LIVECELL_MINI, help="folder with train/ and val/")
    args = parser.parse_args(argv)
    if livecell_mini_missing(args.data):
        return 0
    from napari_cellboxify.recipes import fine_tune_config
    from bench_partial_boxes import apply_panel_training
    from napari_cellboxify.data.coco import CocoSource, coco_index, load_coco
    from napari_cellboxify.data.images import read_image
    from napari_cellboxify.evaluate import cell_type, coco_eval, prediction_to_coco
    from napari_cellboxify.export import boxes_coco
    from napari_cellboxify.predict import Predictor
    from napari_cellboxify.train import Trainer
    from napari_cellboxify.weights import default_weights_path
    from napari_cellboxify.zoom_fit import fit_zoom

    train = load_coco(args.data / "train" / "annotations.json", args.data / "train" / "images")
    val = load_coco(args.data / "val" / "annotations.json", args.data / "val" / "images")
    val_gt = val.pycocotools()
    start = Predictor.from_weights(None, device="auto")
    own_zoom = start.image_scale
    rows: list[str] = []
    per_arm: dict[str, list[dict]] = {}
    for name in args.images:
        entry = next((im for im in train.images if Path(im.file_name).name == name), None)
        if entry is None:
            print(f"error: {name} is not in {args.data / 'train'}", file=sys.stderr)
            return 2
        kind = cell_type(entry.file_name)
        twin = next((im for im in val.images if cell_type(im.file_name) == kind), None)
        if twin is None:
            print(f"error: val has no {kind} image to score {name} on", file=sys.stderr)
            return 2
        image, twin_image = read_image(entry.path), read_image(twin.path)
        shape = tuple(int(v) for v in image.shape[:2])
        quarter = quarter_boxes(entry.boxes_xyxy, shape)
        rest_gt = coco_index(rest_of_image(train.data, entry.id, shape))

        def score(predictor, entry=entry, image=image, twin=twin, twin_image=twin_image, shape=shape,
                  rest_gt=rest_gt) -> dict:
            pred = predictor.segment_image(image, score_threshold=0.05)
            pred = pred.select(~in_quarter(pred.boxes_xyxy, shape))
            dets = prediction_to_coco(pred, entry.id)
            twin_dets = prediction_to_coco(predictor.segment_image(twin_image, score_threshold=0.05), twin.id)
            return {f"{where} {iou_type}": coco_eval(gt, d, iou_type, [i], sizes=False)["AP"]
                    for where, gt, d, i in (("rest", rest_gt, dets, entry.id), ("val", val_gt, twin_dets, twin.id))
                    for iou_type in ("bbox", "segm")}

        start.image_scale = own_zoom
        zoom = fit_zoom(start, [(image, quarter)]).zoom
        # (short label for the means, row label, scores, training seconds)
        arms = [("no fine-tuning", f"no fine-tuning, zoom {own_zoom:g} (the weights' own)", score(start), 0.0)]
        print(name, arms[-1], flush=True)
        start.image_scale = zoom
        arms.append(("fitted zoom, no fine-tuning", f"zoom fitted to the quarter's boxes ({zoom:g}), no fine-tuning",
                     score(start), 0.0))
        print(name, arms[-1], flush=True)
        start.image_scale = own_zoom
        with tempfile.TemporaryDirectory() as tmp:
            ann = Path(tmp) / "quarter.json"
            ann.write_text(json.dumps(boxes_coco([(entry.file_name, shape, quarter)])))
            for i, (label, overrides) in enumerate(RECIPES[key] for key in args.recipes):
                config = fine_tune_config(start.config)  # as the panel does
                config.model.image_scale = zoom  # the panel's Zoom after fitting, which fine-tuning trains at
                apply_panel_training(config, args.steps, min(shape))
                config.train.seed = args.seed
                for field, value in overrides.items():
                    setattr(config.train, field, value)
                config.validate()
                t0 = time.time()
                trainer = Trainer(config, CocoSource(load_coco(ann, args.data / "train" / "images"), config),
                                  Path(tmp) / f"run{i}", init_weights=default_weights_path(), device=start.device)
                trainer.fit()
                arms.append((f"fitted zoom, {label}", f"zoom {zoom:g}, {label}",
                             score(Predictor(trainer.model, device=start.device)), time.time() - t0))
                print(name, arms[-1], flush=True)
        for short, label, s, seconds in arms:
            per_arm.setdefault(short, []).append(s)
            rows.append(f"| {Path(name).stem} ({kind}, {len(quarter)} of {len(entry.boxes_xyxy)} cells boxed) "
                        f"| {label} | {s['rest bbox']:.2f} | {s['rest segm']:.2f} | {s['val bbox']:.2f} "
                        f"| {s['val segm']:.2f} | {seconds / 60:.1f} |")

    lines = ["| image (boxes) | arm | rest of image bbox AP | rest of image segm AP | val same type bbox AP "
             "| val same type segm AP | training min |", "|---|---|---|---|---|---|---|", *rows]
    means = ["| arm | rest of image segm AP | val same type segm AP | change against no fine-tuning (rest / val) |",
             "|---|---|---|---|"]
    base = per_arm["no fine-tuning"]
    for label, scores in per_arm.items():
        rest = np.mean([s["rest segm"] for s in scores])
        twin = np.mean([s["val segm"] for s in scores])
        means.append(f"| {label} | {rest:.2f} | {twin:.2f} | {rest - np.mean([s['rest segm'] for s in base]):+.2f} / "
                     f"{twin - np.mean([s['val segm'] for s in base]):+.2f} |")
    body = (f"Boxes of the cells in the top-left quarter of one train image per cell type; {args.steps} fine-tuning "
            f"steps per arm from the shipped default weights with the panel's settings (Adam 1e-4 unless said, "
            f"2 crops of 256 px as the network sees them, inside the boxed area, seed {args.seed}) at the zoom "
            "fitted to those boxes. Scored on the rest of the same image (cells and detections centred outside the "
            "quarter) and on the val image of the same cell type; LIVECell COCO settings, AP in %.\n\n"
            + "\n".join(lines) + f"\n\nMean over the {len(args.images)} images:\n\n" + "\n".join(means))
    which = "" if args.recipes == list(RECIPES) else ": " + ", ".join(args.recipes)
    write_section("Fine-tuning from a few boxes" + which + (f" (seed {args.seed})" if args.seed else ""), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
