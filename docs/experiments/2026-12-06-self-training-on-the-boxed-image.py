"""By-hand diagnosis: does self-training on the *unboxed* rest of the user's image help a 5-minute fine-tune?

The start weights' detections outside the boxed rectangle (training area and check strip together: the check
strip's pixels are never trained on) become pseudo-boxes (score >= --hi: cells; [--lo, --hi): ignore regions,
neither cell nor background), in bands around the rectangle; training samples alternate between the boxed
training area (the user's boxes, as finetune.AreaSource) and those bands. Scored as
2026-12-06-neuronal-fine-tune-variants.py scores (segm / bbox AP on the bench_adapt domain's other images, and
bbox AP on the check boxes). Run from the repository root, nothing else on the CPU, e.g.:

    python docs/experiments/2026-12-06-self-training-on-the-boxed-image.py --start neurons --domain shsy5y \
        --zoom 2.0 --snaps 2 4.5
"""
import argparse, copy, json, sys, time, tempfile
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "benchmarks")
import bench_adapt as B
from napari_cellboxify import finetune as F
from napari_cellboxify.checkpoint import load_model, save_weights
from napari_cellboxify.data.dataset import Sample
from napari_cellboxify.data.transforms import normalize_image
from napari_cellboxify.predict import Predictor
from napari_cellboxify.train import Trainer
from napari_cellboxify.weights import resolve_weights

p = argparse.ArgumentParser()
p.add_argument("--domain", default="shsy5y"); p.add_argument("--boxes", default="30")
p.add_argument("--start", default="neurons"); p.add_argument("--zoom", type=float, required=True)
p.add_argument("--trainable", default="detector"); p.add_argument("--lr", type=float, default=3e-4)
p.add_argument("--hi", type=float, default=0.7); p.add_argument("--lo", type=float, default=0.3)
p.add_argument("--no_pseudo", action="store_true", help="the same run without the bands (the control)")
p.add_argument("--snaps", type=float, nargs="+", default=[2, 4.5]); p.add_argument("--seed", type=int, default=0)
p.add_argument("--tag", default="self")
a = p.parse_args()
torch.set_num_threads(2)
name, image, boxes = B.boxed_image(a.domain)
chosen = boxes if a.boxes == "all" else B.grown_region(boxes, image.shape, int(a.boxes))
tmp = Path(tempfile.mkdtemp())
coco = B.score_set(a.domain, tmp / "score")
splits = F.split_check_boxes([(name, image.shape[:2], chosen)])
wpath = resolve_weights(a.start)
model0, _ = load_model(wpath, "cpu")
d = model0.config.data
norm = [normalize_image(image, d.clahe, d.clahe_clip_limit)]
src = F.AreaSource(norm, splits)
s = splits[0]
ty0, ty1, tx0, tx1 = s.train_area
cy0, cy1, cx0, cx1 = s.check_area if s.check_area is not None else s.train_area
y0, y1, x0, x1 = min(ty0, cy0), max(ty1, cy1), min(tx0, cx0), max(tx1, cx1)
H, W = image.shape[:2]
bands = [(0, y0, 0, W), (y1, H, 0, W), (y0, y1, 0, x0), (y0, y1, x1, W)]
n_cells = n_ignore = 0
if not a.no_pseudo:
    pred = Predictor(model0, "cpu").with_settings(image_scale=a.zoom, score_threshold=a.lo).segment_image(image)
    area = lambda x: (x[:, 2] - x[:, 0]).clip(0) * (x[:, 3] - x[:, 1]).clip(0)
    b = pred.boxes_xyxy.astype(np.float32)
    full = np.maximum(area(b), 1e-6)
    for by0, by1, bx0, bx1 in bands:
        if by1 - by0 < 64 or bx1 - bx0 < 64:
            continue
        clipped = b.copy()
        clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(bx0, bx1)
        clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(by0, by1)
        inside = area(clipped) > 0
        whole = area(clipped) >= 0.6 * full
        cell = inside & whole & (pred.scores >= a.hi)
        ignore = inside & ~cell  # unsure, or cut by the band's edge
        off = np.array([bx0, by0, bx0, by0], np.float32)
        src.samples.append(Sample(np.ascontiguousarray(norm[0][by0:by1, bx0:bx1]), clipped[cell] - off, None,
                                  f"band{len(src.samples)}", ignore_xyxy=clipped[ignore] - off))
        n_cells += int(cell.sum()); n_ignore += int(ignore.sum())
if len(src.samples) > 1:  # as many draws of the boxed area as of the bands: the user's boxes weigh half
    src.samples = [src.samples[0]] * (len(src.samples) - 1) + src.samples[1:]
print(f"pseudo cells {n_cells}, ignore {n_ignore}, samples {len(src.samples)}", flush=True)
tb = s.train_boxes
med = float(np.median(np.concatenate([tb[:, 2] - tb[:, 0], tb[:, 3] - tb[:, 1]])))
small = min(s.train_area[1] - s.train_area[0], s.train_area[3] - s.train_area[2])
cfg = F.fine_tune_run_config(model0.config, F.Recipe("x", a.trainable, a.lr), a.zoom, small, med, "cpu")
cfg.train.seed = a.seed
tr = Trainer(cfg, src, tmp / "train", init_weights=wpath, device="cpu")
print("crop", cfg.data.crop_size, "check before", round(F.check_ap(tr.model, norm, splits, a.zoom).ap, 1), flush=True)
snaps, steps, ttrain = list(a.snaps), tr.iter_steps(), 0.0
while snaps:
    ts = time.time(); next(steps); ttrain += time.time() - ts
    if ttrain >= snaps[0] * 60:
        snaps.pop(0)
        chk = F.check_ap(tr.model, norm, splits, a.zoom)
        c = copy.deepcopy(cfg); c.model.image_scale = a.zoom
        wp = tmp / f"snap_{tr.step}.pt"; save_weights(wp, copy.deepcopy(tr.model).cpu(), c)
        sc = B.score(wp, coco, "cpu")
        print(json.dumps({"tag": a.tag, "domain": a.domain, "start": a.start, "pseudo": not a.no_pseudo,
                          "step": tr.step, "train_min": round(ttrain / 60, 2), "check": round(chk.ap, 1),
                          **{k: round(v, 2) for k, v in sc.items()}}), flush=True)
steps.close()
