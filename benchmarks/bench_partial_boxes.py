"""Fine-tuning on a partly boxed image: what unboxed cells cost, and what training inside the boxed area gives.

A biologist boxes a few dozen cells in one part of an image and fine-tunes (the panel's *Fine-tune*). Every
pixel no box covers is background to a box-supervised detector, so the unboxed cells elsewhere in the image are
taught as background unless training stays inside the annotated area (``data.annotated_area = "boxes"``, the
default; ``data/annotated_area.py``). Three fine-tunes from the default weights with the panel's settings (same
seed, steps, crops), on one livecell-mini *train* image:

- all cells boxed, whole image (the reference a complete annotation gives);
- only the cells whose centre lies in the top-left quarter boxed, whole image (``annotated_area = "image"``:
  the other three quarters teach their cells as background);
- the same quarter's boxes, training inside their rectangle (``annotated_area = "boxes"``);

then the panel's *Fit zoom to my boxes* from the quarter's boxes (``zoom_fit.py``), alone and followed by the
last fine-tune at the fitted zoom (the panel fine-tunes at its Zoom). Each is scored on livecell-mini *val* (all
five images, and the one image of the same cell type) at the zoom it was trained or fitted at: for the fitted
zoom, the same-type column is the one that answers (the other types would have their own fitted zoom).

    python benchmarks/bench_partial_boxes.py [--image A172_Phase_C7_1_00d20h00m_4.tif] [--steps 200] [--seed 0]
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


def in_quarter(boxes_xyxy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Which boxes have their centre in the top-left quarter of an image of ``shape`` (H, W)."""
    h, w = shape
    boxes_xyxy = np.asarray(boxes_xyxy).reshape(-1, 4)
    cx = (boxes_xyxy[:, 0] + boxes_xyxy[:, 2]) / 2
    cy = (boxes_xyxy[:, 1] + boxes_xyxy[:, 3]) / 2
    return (cx < w / 2) & (cy < h / 2)


def quarter_boxes(boxes_xyxy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The boxes whose centre lies in the top-left quarter of an image of ``shape`` (H, W)."""
    return boxes_xyxy[in_quarter(boxes_xyxy, shape)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="A172_Phase_C7_1_00d20h00m_4.tif", help="a livecell-mini train image")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps per arm (the panel's default)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every arm (replicates)")
    parser.add_argument("--data", type=Path, default=LIVECELL_MINI, help="folder with train/ and val/")
    args = parser.parse_args(argv)
    if livecell_mini_missing(args.data):
        return 0
    from napari_cellboxify.recipes import fine_tune_config
    from napari_cellboxify.data.coco import CocoSource, load_coco
    from napari_cellboxify.data.images import read_image
    from napari_cellboxify.evaluate import cell_type, evaluate
    from napari_cellboxify.export import boxes_coco
    from napari_cellboxify.predict import Predictor
    from napari_cellboxify.train import Trainer
    from napari_cellboxify.weights import default_weights_path
    from napari_cellboxify.zoom_fit import fit_zoom

    train = load_coco(args.data / "train" / "annotations.json", args.data / "train" / "images")
    entry = next((im for im in train.images if Path(im.file_name).name == args.image), None)
    if entry is None:
        print(f"error: {args.image} is not in {args.data / 'train'}", file=sys.stderr)
        return 2
    val = load_coco(args.data / "val" / "annotations.json", args.data / "val" / "images")
    kind = cell_type(entry.file_name)
    image = read_image(entry.path)
    shape = tuple(int(v) for v in image.shape[:2])
    quarter = quarter_boxes(entry.boxes_xyxy, shape)
    start = Predictor.from_weights(None, device="auto")
    own_zoom = start.image_scale
    zoom = fit_zoom(start, [(image, quarter)]).zoom
    arms = [("all cells boxed, whole image", entry.boxes_xyxy, "image", own_zoom),
            ("top-left quarter boxed, whole image", quarter, "image", own_zoom),
            ("top-left quarter boxed, inside the boxed area", quarter, "boxes", own_zoom),
            (f"zoom fitted to the quarter's boxes ({zoom:g}), then the quarter inside the boxed area", quarter,
             "boxes", zoom)]

    def score(predictor) -> dict:
        m = evaluate(predictor, val)
        same = m.get("per_cell_type", {}).get(kind, {})
        return {"bbox": m["bbox"]["AP"], "segm": m["segm"]["AP"], "bbox_kind": same.get("bbox_AP", float("nan")),
                "segm_kind": same.get("segm_AP", float("nan"))}

    rows = [("default weights, no fine-tuning", 0, score(start), 0.0)]
    print(rows[-1], flush=True)
    start.image_scale = zoom
    rows.append((f"zoom fitted to the quarter's boxes ({zoom:g}), no fine-tuning", 0, score(start), 0.0))
    print(rows[-1], flush=True)
    start.image_scale = own_zoom
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, boxes, area, arm_zoom) in enumerate(arms):
            ann = Path(tmp) / f"arm{i}.json"
            ann.write_text(json.dumps(boxes_coco([(entry.file_name, shape, boxes)])))
            config = fine_tune_config(start.config)  # as the panel does
            config.model.image_scale = arm_zoom  # the panel's Zoom, which fine-tuning trains at
            apply_panel_training(config, args.steps, min(shape))
            config.data.annotated_area = area
            # Every weight trained, as the panel did until 2026-11-28 (bench_few_boxes.py compares the recipes):
            # this benchmark's figures in RESULTS.md were measured so.
            config.train.trainable = "all"
            config.train.seed = args.seed
            t0 = time.time()
            trainer = Trainer(config, CocoSource(load_coco(ann, args.data / "train" / "images"), config),
                              Path(tmp) / f"run{i}", init_weights=default_weights_path(), device=start.device)
            trainer.fit()
            rows.append((name, len(boxes), score(Predictor(trainer.model, device=start.device)), time.time() - t0))
            print(rows[-1], flush=True)

    lines = [f"| fine-tuned on {Path(args.image).stem} | boxes | val bbox AP | val segm AP | val {kind} bbox AP "
             f"| val {kind} segm AP |", "|---|---|---|---|---|---|"]
    for name, n, s, _ in rows:
        lines.append(f"| {name} | {n} | {s['bbox']:.2f} | {s['segm']:.2f} | {s['bbox_kind']:.2f} | {s['segm_kind']:.2f} |")
    body = (f"{args.steps} fine-tuning steps per arm from the shipped default weights with the panel's settings "
            f"(Adam 1e-4, 2 crops of 256 px as the network sees them, zoom {own_zoom:g} unless fitted, "
            f"seed {args.seed}) on one image of {shape[1]}×{shape[0]} px with "
            f"{len(entry.boxes_xyxy)} cells; the quarter holds {len(quarter)} of them. Scored on livecell-mini val "
            "(5 images, 892 cells; LIVECell COCO settings, AP in %).\n\n" + "\n".join(lines))
    write_section("Fine-tuning on a partly boxed image" + (f" (seed {args.seed})" if args.seed else ""), body)
    return 0


def apply_panel_training(config, steps: int, smallest_side: int, fine_tuning: bool = True) -> None:
    """Set (in place) the fixed-step recipe the panel's *Fine-tune* used before ``finetune.fine_tune``, which these
    benchmarks measured: ``steps``, a checkpoint every tenth of them, a loss point every step, CPU-sized crops
    (256 px as the network sees them, at most ``smallest_side``) and, when ``fine_tuning`` trained weights, only
    their RPN and box head (``train.trainable = "box_heads"``)."""
    if fine_tuning:
        # A panel fine-tune has a few dozen boxes. Trained on them, the trunk drifts and every mask with it:
        # from a quarter of one image's boxes (12-75 cells, 4 cell types, benchmarks/bench_few_boxes.py) all
        # weights lost 3.7 segm AP on the rest of the image and 3.2 on the next image of the same cells, the
        # heads with the trunk kept 0.4 / 0.9, the RPN and box head alone gained 0.5 / 0.1, at 0.21 s a step
        # instead of 1.55 on 2 CPU cores. The mask branch, learned from thousands of cells, is kept as it is.
        config.train.trainable = "box_heads"
    config.train.steps = steps
    config.train.checkpoint_every = max(10, steps // 10)
    config.train.log_every = 1
    # A step's cost follows the pixels the network sees, so the crop is fixed there, not in the image: a fine-tune
    # at 1.5x zoom (the default weights') costs per step what one at 1x does, and one at 0.5x still sees 256 px
    # of context. The crop stored with the weights was sized for their own training machine, not this one.
    config.data.crop_size = max(32, min(round(256 / config.model.image_scale), smallest_side))


if __name__ == "__main__":
    sys.exit(main())
