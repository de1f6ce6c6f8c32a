"""By-hand diagnosis behind 2026-12-06-neuronal-fine-tune-variants.md: one recipe trained from `cells` (or
``--start``: a shipped name or a file) on N boxes of a benchmarks/bench_adapt.py domain (its check strip set
aside as finetune.split_check_boxes does), snapshots at the given training minutes, each scored on the domain's
other images (segm / bbox AP) and on the check boxes.
Run from the repository root, nothing else on the CPU, e.g.:

    python docs/experiments/2026-12-06-neuronal-fine-tune-variants.py --domain shsy5y --zoom 2.0 \
        --trainable all --lr 1e-4 --snaps 2 4.5
    python docs/experiments/2026-12-06-neuronal-fine-tune-variants.py --domain cort --zoom 1.75 --snaps 3 4.5 \
        --then polygon_head --then_at 3      # the detector, then the mask branch alone
"""
import argparse, copy, json, sys, time, tempfile
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "benchmarks")
import bench_adapt as B
from napari_cellboxify import finetune as F
from napari_cellboxify.checkpoint import save_weights
from napari_cellboxify.train import Trainer
from napari_cellboxify.weights import resolve_weights
from napari_cellboxify.checkpoint import load_model
from napari_cellboxify.data.transforms import normalize_image

p = argparse.ArgumentParser()
p.add_argument("--domain", default="shsy5y"); p.add_argument("--boxes", default="30")
p.add_argument("--zoom", type=float, required=True); p.add_argument("--lr", type=float, default=3e-4)
p.add_argument("--trainable", default="detector"); p.add_argument("--snaps", type=float, nargs="+", default=[2, 4.5])
p.add_argument("--ema", type=float, default=0.0); p.add_argument("--crop", type=int, default=0)
p.add_argument("--batch", type=int, default=0); p.add_argument("--set", nargs="*", default=[])
p.add_argument("--then", default=""); p.add_argument("--then_lr", type=float, default=3e-4); p.add_argument("--then_at", type=float, default=99)
p.add_argument("--tag", default="x"); p.add_argument("--seed", type=int, default=0)
p.add_argument("--start", default="cells", help="shipped name or file to start from")
a = p.parse_args()
torch.set_num_threads(2)
name, image, boxes = B.boxed_image(a.domain)
chosen = boxes if a.boxes == "all" else B.grown_region(boxes, image.shape, int(a.boxes))
tmp = Path(tempfile.mkdtemp())
coco = B.score_set(a.domain, tmp / "score")
splits = F.split_check_boxes([(name, image.shape[:2], chosen)])
wpath = resolve_weights(a.start)
model0, cfg0 = load_model(wpath, "cpu")
d = model0.config.data
norm = [normalize_image(image, d.clahe, d.clahe_clip_limit)]
src = F.AreaSource(norm, splits)
tb = np.concatenate([s.train_boxes for s in splits])
med = float(np.median(np.concatenate([tb[:, 2] - tb[:, 0], tb[:, 3] - tb[:, 1]])))
small = min(min(s.train_area[1] - s.train_area[0], s.train_area[3] - s.train_area[2]) for s in splits)
cfg = F.fine_tune_run_config(model0.config, F.Recipe("x", a.trainable, a.lr), a.zoom, small, med, "cpu")
cfg.train.seed = a.seed
if a.ema: cfg.train.ema_decay = a.ema
if a.crop: cfg.data.crop_size = a.crop
if a.batch: cfg.train.batch_size = a.batch
from napari_cellboxify.config import apply_overrides
if a.set: cfg = apply_overrides(cfg, a.set)
print("crop", cfg.data.crop_size, "batch", cfg.train.batch_size, "med", med, flush=True)
tr = Trainer(cfg, src, tmp / "train", init_weights=wpath, device="cpu")
chk0 = F.check_ap(tr.model, norm, splits, a.zoom)
print("check before", chk0.ap, flush=True)
out = []
t0 = time.time(); snaps = list(a.snaps); steps = tr.iter_steps(); ttrain = 0.0
losses = []
while snaps:
    ts = time.time(); info = next(steps); ttrain += time.time() - ts
    losses.append(info.loss)
    if a.then and ttrain >= a.then_at * 60:
        steps.close(); wp = tmp / "phase1.pt"; c = copy.deepcopy(cfg); save_weights(wp, copy.deepcopy(tr.model).cpu(), c)
        cfg = F.fine_tune_run_config(model0.config, F.Recipe("y", a.then, a.then_lr), a.zoom, small, med, "cpu")
        cfg.train.seed = a.seed
        tr = Trainer(cfg, src, tmp / "train2", init_weights=wp, device="cpu"); steps = tr.iter_steps(); a.then = ""
        print("phase 2 at", round(ttrain/60,2), flush=True)
    if ttrain >= snaps[0] * 60:
        snaps.pop(0)
        m = tr.ema.module if tr.ema is not None else tr.model
        chk = F.check_ap(m, norm, splits, a.zoom)
        c = copy.deepcopy(cfg); c.model.image_scale = a.zoom
        wp = tmp / f"snap_{tr.step}.pt"; save_weights(wp, copy.deepcopy(m).cpu(), c)
        te = time.time(); sc = B.score(wp, coco, "cpu")
        r = {"tag": a.tag, "domain": a.domain, "boxes": a.boxes, "step": tr.step, "train_min": round(ttrain / 60, 2),
             "check": round(chk.ap, 1), "loss_last50": round(float(np.mean(losses[-50:])), 3),
             **{k: round(v, 2) for k, v in sc.items()}, "score_s": round(time.time() - te)}
        out.append(r); print(json.dumps(r), flush=True)
steps.close()
