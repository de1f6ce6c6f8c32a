"""By-hand check: does `--weights auto` (flip_agreement.choose_shipped) choose the right shipped file on images
the rule was not chosen on?

The rule was chosen on 19 val images (docs/experiments/2026-12-07-label-free-start-choice.md: livecell-mini/val,
6 decoded Sartorius val images, the first 8 fluorescence images of dsb2018/val). Here, one image at a time (the
strictest use: `predict` on a single file), each shipped file at its own zoom, score 0.5, no test-time
augmentation, on the central 1,024-px square as the shipped code measures it:
- agreement: matched F1 of the detections on the image and on its mirror image (flip_agreement);
- truth: matched F1 of the same detections against the labelled boxes whose centres lie in that square.
The file with the highest agreement is the choice (ties to `cells`); the file with the highest truth F1 is the
right one. Images:
- neuronal: the 5 Sartorius exact-label images bench_domains scores, and sartorius-shsy5y-1;
- fluorescence nuclei: dsb2018/val's fluorescence images after the first 8, and dsb2018-nuclei-1;
- images no shipped file is for: dsb2018/val's brightfield and stained images (what auto does there);
- LIVECell: 8 of livecell-unlabeled (no labels: which file is chosen; `cells` was self-trained on their
  pseudo-boxes, so this is not independent).
Run from the repository root with nothing else on the CPU (about 6 minutes on 2 cores):

    python docs/experiments/2026-12-08-automatic-weights-choice.py
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _scored_sets import SARTORIUS_EXACT  # noqa: E402

from napari_cellboxify.data.images import read_image  # noqa: E402
from napari_cellboxify.flip_agreement import agreement_window, matched_f1, mirror_pair, most_agreeing  # noqa: E402
from napari_cellboxify.predict import Predictor  # noqa: E402
from napari_cellboxify.weights import SHIPPED  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MISREGISTERED = "afbcea22fc2a.png"  # original/: labels 5 px off (2026-12-07-misregistered-cortical-labels.md)


def labelled(root: Path, keep):
    coco = json.loads((root / "annotations.json").read_text())
    for im in coco["images"]:
        if keep(im):
            boxes = np.array([a["bbox"] for a in coco["annotations"] if a["image_id"] == im["id"]], np.float32)
            boxes[:, 2:] += boxes[:, :2]
            yield im["file_name"], root / "images" / im["file_name"], boxes


def images():
    fluo = lambda im: im.get("modality") == "fluorescence_grayscale"  # noqa: E731
    dsb_fluo = [im["file_name"] for im in json.loads((DATA / "dsb2018/val/annotations.json").read_text())["images"]
                if fluo(im)][:8]  # the 8 the rule was chosen on
    sets = [
        ("neuronal", "neurons", DATA / "sartorius-2021/original", lambda im: im["file_name"] != MISREGISTERED),
        ("neuronal", "neurons", DATA / "sartorius-2021/reconstructed",
         lambda im: im.get("sartorius_id") in SARTORIUS_EXACT),
        ("neuronal", "neurons", DATA / "sartorius-shsy5y-1", lambda im: True),
        ("fluorescence nuclei", "nuclei", DATA / "dsb2018/val", lambda im: fluo(im) and im["file_name"] not in dsb_fluo),
        ("fluorescence nuclei", "nuclei", DATA / "dsb2018-nuclei-1", lambda im: True),
        ("brightfield/stained nuclei", None, DATA / "dsb2018/val", lambda im: not fluo(im)),
    ]
    for group, meant, root, keep in sets:
        for name, path, boxes in labelled(root, keep):
            yield group, meant, name, path, boxes
    unlabeled = sorted((DATA / "livecell-unlabeled/images").iterdir())
    for path in unlabeled[:: max(len(unlabeled) // 8, 1)][:8]:
        yield "LIVECell (unlabeled)", "cells", path.name, path, None


def main() -> None:
    torch.set_num_threads(2)
    predictors = {n: Predictor.from_weights(n, device="cpu").with_settings(score_threshold=0.5, tta="off")
                  for n in SHIPPED}
    rows = []
    for group, meant, name, path, truth in images():
        image = read_image(path)
        y0, y1, x0, x1 = agreement_window(image.shape[:2], np.zeros((0, 4), np.float32))
        region = np.ascontiguousarray(image[y0:y1, x0:x1])
        row = {"group": group, "meant": meant, "image": name, "agreement": {}, "truth": {}}
        if truth is not None:
            centres = (truth[:, :2] + truth[:, 2:]) / 2
            inside = (centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0) & (centres[:, 1] < y1)
            truth = truth[inside] - np.array([x0, y0, x0, y0], np.float32)
        for file, predictor in predictors.items():
            found, back = mirror_pair(predictor, region)
            row["agreement"][file] = round(matched_f1(found, back), 3)
            if truth is not None:
                row["truth"][file] = round(matched_f1(found, truth), 3)
        row["chosen"] = most_agreeing(row["agreement"])
        row["best"] = max(row["truth"], key=row["truth"].get) if row["truth"] else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| group | image | agreement " + " / ".join(SHIPPED) + " | truth F1 " + " / ".join(SHIPPED)
          + " | chosen | best by truth |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        truth = " / ".join(f"{r['truth'][f]:.2f}" for f in SHIPPED) if r["truth"] else "-"
        print(f"| {r['group']} | {r['image'][:12]} | " + " / ".join(f"{r['agreement'][f]:.2f}" for f in SHIPPED)
              + f" | {truth} | `{r['chosen']}` | " + (f"`{r['best']}`" if r["best"] else "-") + " |")
    print()
    for group in dict.fromkeys(r["group"] for r in rows):
        sub = [r for r in rows if r["group"] == group]
        meant = sub[0]["meant"]
        right = sum(r["chosen"] == r["best"] for r in sub if r["best"])
        chose = {f: sum(r["chosen"] == f for r in sub) for f in SHIPPED}
        print(f"{group}: {len(sub)} images; chosen " + ", ".join(f"{f} {n}" for f, n in chose.items() if n)
              + (f"; the file meant for them ({meant}) on {chose[meant]}" if meant else "")
              + (f"; the best by truth on {right} of {sum(1 for r in sub if r['best'])}" if sub[0]["truth"] else ""))


if __name__ == "__main__":
    sys.exit(main())
