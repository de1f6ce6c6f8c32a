"""By-hand validation: can a label-free signal on the user's whole image tell which shipped file suits it?

`fine_tune(weights="auto")` ranks the shipped files by bbox AP on the user's training boxes, which a few dozen
boxes in one corner rank within noise (SH-SY5Y, 30 boxes: `cells` 12.5, `neurons` 9.2, while `neurons` is far
ahead on the domain's other images). Candidate tie-breaks that need no labels, measured per image with each
file at its own zoom:
- flip agreement: detections on the image and on its mirror image (mapped back) matched one-to-one at box IoU
  >= 0.5; F1 of that matching;
- against it, the truth: F1 of the detections against the labelled boxes at IoU >= 0.5.
Images that bench_adapt neither boxes nor scores: livecell-mini/val (5), the 6 Sartorius val images of the
`neurons` card (decoded labels), 8 fluorescence images of dsb2018/val. Run from the repository root with nothing
else on the CPU:

    python docs/experiments/2026-12-07-label-free-start-choice.py
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from napari_cellboxify.predict import Predictor

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SART_VAL = ("0ba181d412da", "232c47d31333", "4378ec854810", "624d50b5bfd1", "8f276651b26c", "e33da393df22")


def images():
    sets = [("livecell", DATA / "livecell-mini/val", lambda im: True),
            ("sartorius", DATA / "sartorius-2021/reconstructed", lambda im: im.get("sartorius_id") in SART_VAL),
            ("dsb_fluo", DATA / "dsb2018/val", lambda im: im.get("modality") == "fluorescence_grayscale")]
    for domain, root, keep in sets:
        coco = json.loads((root / "annotations.json").read_text())
        chosen = [im for im in coco["images"] if keep(im)][:8]
        for im in chosen:
            boxes = np.array([a["bbox"] for a in coco["annotations"] if a["image_id"] == im["id"]], np.float32)
            boxes[:, 2:] += boxes[:, :2]
            yield domain, im["file_name"], np.asarray(Image.open(root / "images" / im["file_name"])), boxes


def f1(a: np.ndarray, b: np.ndarray) -> float:
    if not len(a) and not len(b):
        return 1.0
    if not len(a) or not len(b):
        return 0.0
    iou = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    rows, cols = linear_sum_assignment(-iou)
    matched = int((iou[rows, cols] >= 0.5).sum())
    return 2 * matched / (len(a) + len(b))


def main() -> None:
    torch.set_num_threads(2)
    predictors = {name: Predictor.from_weights(name, device="cpu") for name in ("cells", "neurons", "nuclei")}
    rows = []
    for domain, name, image, truth in images():
        row = {"domain": domain, "image": name}
        for file, predictor in predictors.items():
            pred = predictor.segment_image(image).boxes_xyxy
            mirrored = predictor.segment_image(np.ascontiguousarray(image[:, ::-1])).boxes_xyxy.copy()
            w = image.shape[1]
            mirrored[:, [0, 2]] = w - mirrored[:, [2, 0]]
            row[file] = {"truth_f1": f1(pred, truth), "flip_f1": f1(pred, mirrored), "n": len(pred)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    for domain in ("livecell", "sartorius", "dsb_fluo"):
        sub = [r for r in rows if r["domain"] == domain]
        agree = sum(max(predictors, key=lambda f: r[f]["truth_f1"]) == max(predictors, key=lambda f: r[f]["flip_f1"])
                    for r in sub)
        means = {f: (np.mean([r[f]["truth_f1"] for r in sub]), np.mean([r[f]["flip_f1"] for r in sub]))
                 for f in predictors}
        print(domain, f"best by flip = best by truth on {agree}/{len(sub)} images;",
              ", ".join(f"{f} truth {t:.2f} flip {fl:.2f}" for f, (t, fl) in means.items()))


if __name__ == "__main__":
    sys.exit(main())
