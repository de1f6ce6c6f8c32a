"""By-hand validation: should a fine-tune move off its start weights' zoom on a small gain on the training boxes?

`fine_tune` fits the zoom on the training boxes (`zoom_fit.fit_zoom`: the best of 8 zooms, ties within 0.05 AP
to the start's) and trains and checks there. A few dozen boxes rank zooms within noise, as they rank shipped
files (which the start choice only trusts beyond `check_boxes.min_gain(n)`). Here, no training: for each boxed
image and N boxes (the N nearest its top-left corner, `bench_adapt.grown_region`; the check strip set aside as
`fine_tune` does), the start file's zoom search on the training boxes, and the file's segm AP on *other* images of
the same kind at (a) the zoom the search picks (ties within 0.05 AP) and (b) the zoom `fine_tune` now trains at:
the one nearest the start's among those within `min_gain(n_train)` of the best on the training boxes.

Images bench_adapt neither boxes nor scores:
- LIVECell (`cells`): boxes on a livecell-mini/train image, scored on the val image of the same cell type (SKOV3,
  BT474, Huh7; A172 is the benchmark's, MCF7 has no val image);
- Sartorius (`neurons`): the 5 sparse val images of the `neurons` card, each boxed, scored on the other 4 (decoded
  labels; `neurons`' stage 1 saw their boxes);
- DSB2018 fluorescence (`nuclei`): 8 dsb2018/val images, each boxed, scored on the other 7.

    python docs/experiments/2026-12-07-zoom-change-margin.py [livecell sartorius dsb]
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_adapt as B  # noqa: E402
from napari_cellboxify.check_boxes import min_gain, split_check_boxes  # noqa: E402
from napari_cellboxify.data.coco import coco_index  # noqa: E402
from napari_cellboxify.evaluate import coco_eval, prediction_to_coco  # noqa: E402
from napari_cellboxify.finetune import ZOOM_FACTORS  # noqa: E402
from napari_cellboxify.predict import Predictor  # noqa: E402
from napari_cellboxify.zoom_fit import fit_zoom, nearest_tied_zoom  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SART_SPARSE_VAL = ("0ba181d412da", "232c47d31333", "624d50b5bfd1", "8f276651b26c", "e33da393df22")


def load(folder, keep):
    coco = json.loads((DATA / folder / "annotations.json").read_text())
    out = []
    for im in coco["images"]:
        if keep(im):
            anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
            boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            image = np.asarray(Image.open(DATA / folder / "images" / im["file_name"]))
            out.append({"name": im["file_name"], "image": image, "boxes": boxes, "anns": anns})
    return out


def cases(which):
    """(set, weights, [(boxed, [scored, ...]), ...])"""
    if which == "livecell":
        train = load("livecell-mini/train", lambda im: True)
        val = load("livecell-mini/val", lambda im: True)
        pairs = [(t, [v for v in val if v["name"].split("_")[0] == t["name"].split("_")[0]]) for t in train
                 if t["name"].split("_")[0] in ("SKOV3", "BT474", "Huh7")]
        return "cells", pairs
    if which == "sartorius":
        imgs = load("sartorius-2021/reconstructed", lambda im: im.get("sartorius_id") in SART_SPARSE_VAL)
        return "neurons", [(a, [b for b in imgs if b is not a]) for a in imgs]
    imgs = load("dsb2018/val", lambda im: im.get("modality") == "fluorescence_grayscale")[:8]
    return "nuclei", [(a, [b for b in imgs if b is not a]) for a in imgs]


class Scorer:
    """segm AP of a predictor on a list of images at a zoom, each image's detections cached per zoom."""

    def __init__(self, predictor):
        self.predictor, self.cache = predictor, {}

    def detections(self, entry, zoom):
        key = (entry["name"], round(zoom, 4))
        if key not in self.cache:
            self.predictor.image_scale = zoom
            self.cache[key] = prediction_to_coco(self.predictor.segment(entry["image"], score_threshold=0.05), 0)
        return self.cache[key]

    def ap(self, entries, zoom):
        data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
        dets = []
        for i, e in enumerate(entries, start=1):
            h, w = e["image"].shape[:2]
            data["images"].append({"id": i, "file_name": e["name"], "width": w, "height": h})
            for a in e["anns"]:
                data["annotations"].append(dict(a, id=len(data["annotations"]) + 1, image_id=i, category_id=1,
                                                iscrowd=0, area=a.get("area", a["bbox"][2] * a["bbox"][3])))
            dets += [dict(d, image_id=i) for d in self.detections(e, zoom)]
        for d in dets:
            d.pop("bbox", None)
        return coco_eval(coco_index(data), dets, "segm", sizes=False)["AP"]


def main() -> None:
    torch.set_num_threads(2)
    rows = []
    for which in (sys.argv[1:] or ["livecell", "sartorius", "dsb"]):
        weights, pairs = cases(which)
        predictor = Predictor.from_weights(weights, device="cpu")
        start = predictor.image_scale
        scorer = Scorer(predictor)
        for boxed, scored in pairs:
            for n in (30, 100, "all"):
                if n != "all" and n >= len(boxed["boxes"]):
                    continue
                chosen = boxed["boxes"] if n == "all" else B.grown_region(boxed["boxes"], boxed["image"].shape, n)
                split = split_check_boxes([(boxed["name"], boxed["image"].shape[:2], chosen)])[0]
                predictor.image_scale = start
                fit = fit_zoom(predictor, [(boxed["image"], split.train_boxes)], factors=ZOOM_FACTORS)
                predictor.image_scale = start
                n_train = len(split.train_boxes)
                # fine_tune's rule (fit_zoom's tolerance), on the same search
                zoom_margin = nearest_tied_zoom(fit.box_ap, start, min_gain(n_train))
                row = {"set": which, "boxed": boxed["name"][:24], "n": n, "n_train": n_train,
                       "fit": {f"{z:g}": round(a, 1) for z, a in sorted(fit.box_ap.items())},
                       "fitted": round(fit.zoom, 2), "needed": round(min_gain(n_train), 1),
                       "with_margin": round(zoom_margin, 2),
                       "ap_start_zoom": round(scorer.ap(scored, start), 2),
                       "ap_fitted": round(scorer.ap(scored, fit.zoom), 2)}
                row["ap_margin"] = round(scorer.ap(scored, zoom_margin), 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    for which in sorted({r["set"] for r in rows}):
        sub = [r for r in rows if r["set"] == which]
        print(which, f"{len(sub)} cases; mean segm AP on other images: start zoom "
              f"{np.mean([r['ap_start_zoom'] for r in sub]):.2f}, fitted {np.mean([r['ap_fitted'] for r in sub]):.2f}, "
              f"fine_tune's rule (tolerance min_gain) {np.mean([r['ap_margin'] for r in sub]):.2f}")


if __name__ == "__main__":
    sys.exit(main())
