"""By-hand validation: do weights part-way between the start and a 5-minute fine-tune find a domain's *other*
images better than either end (weight-space interpolation, as WiSE-FT)?

Chosen on images that neither bench_adapt boxes nor scores, from ``cells`` (which never saw them):
- ``sart_dense``: 30 boxes on one dense overlay-decoded sartorius-2021/reconstructed image (SH-SY5Y-like),
  scored on two other dense ones (decoded masks: approximate AP, fine for ranking);
- ``sart_sparse``: the same on sparse small-celled decoded images (cortical-like);
- ``dsb_train``: 30 boxes on one dsb2018/train fluorescence image, scored on ten others of dsb2018/train.
``fine_tune(weights=START, force=True, blend=BLEND)``, then for each alpha the weights
``(1 - alpha) * start + alpha * fine-tuned`` at the fine-tuned zoom, scored by segm / bbox AP; "fine-tuned" is the
best-checked step as trained whichever weights fine_tune wrote (a blend written with share b is start +
b * (trained - start), so share alpha of the trained weights is start + alpha / b * (written - start)). The first
table ran with ``--blend 1`` (fine_tune had no blend then); ``--blend 0.5`` runs fine_tune as shipped and also
prints the check APs it chose between. Run from the repository root with nothing else on the CPU:

    python docs/experiments/2026-12-06-interpolating-fine-tuned-weights.py --val sart_dense --seed 0 --blend 1
"""
import argparse, json, sys, tempfile
from pathlib import Path
import torch
sys.path.insert(0, "benchmarks")
import bench_adapt as B
from napari_cellboxify.checkpoint import load_model, save_weights
from napari_cellboxify.finetune import fine_tune
from napari_cellboxify.weights import resolve_weights

DENSE = ("1e55de6c2a34", ["fe3e30f849f4", "446cf8ba65e5"])
SPARSE = ("2d8810967b36", ["7c118cb496f7", "cc8526acd4fe", "05c61f0f46b7", "0ba181d412da", "04928f0866b0"])
p = argparse.ArgumentParser()
p.add_argument("--val", choices=["sart_dense", "sart_sparse", "dsb_train"], required=True)
p.add_argument("--start", default="cells"); p.add_argument("--boxes", type=int, default=30)
p.add_argument("--seed", type=int, default=0); p.add_argument("--minutes", type=float, default=5.0)
p.add_argument("--run", help="an earlier run's fine-tune folder (skips the fine-tune)")
p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0])
p.add_argument("--blend", type=float, default=1.0, help="fine_tune's blend (1: as trained)")
a = p.parse_args()
torch.set_num_threads(2)

if a.val == "dsb_train":
    meta = json.loads((B.DATA / "dsb2018/train/annotations.json").read_text())["images"]
    fluo = [im for im in meta if im["modality"] == "fluorescence_grayscale" and not im["file_name"].startswith("4d2cff9a")]
    fluo.sort(key=lambda im: im["file_name"])
    boxed = next(im for im in fluo if im["n_nuclei"] >= 60)["file_name"]
    scored = [im["file_name"] for im in fluo if im["file_name"] != boxed][::6][:10]
    folder = "dsb2018/train"
else:
    boxed, scored = DENSE if a.val == "sart_dense" else SPARSE
    folder = "sartorius-2021/reconstructed"
B.DOMAINS["val"] = ("val", (folder, B._is(boxed)), [(folder, lambda im: any(im["file_name"].startswith(s)
                                                                              for s in scored))])
tmp = Path(tempfile.mkdtemp())
coco = B.score_set("val", tmp / "score")
name, image, boxes = B.boxed_image("val")
chosen = B.grown_region(boxes, image.shape, a.boxes)
print(f"{tmp}: {a.val}: boxed {name} ({len(chosen)} of {len(boxes)} boxes), scored {len(coco.images)} images", flush=True)
start_path = resolve_weights(a.start)
run = Path(a.run) if a.run else tmp / "run"
if not a.run:
    fine_tune([(name, image, chosen)], run, weights=start_path, minutes=a.minutes, seed=a.seed, force=True,
              blend=a.blend)
report = json.loads((run / "report.json").read_text())
print(f"fine-tune {report['wall_seconds']:.0f} s: {report['recipe']['name']}, {report['steps']} steps (best "
      f"{report['best_step']}), zoom {report['zoom']}, check {report['before_ap']} -> {report['after_ap']} "
      f"(written share {report.get('blend', 1.0)}; checks: blend {report.get('after_ap_blended')}, as trained "
      f"{report.get('after_ap_unblended')})", flush=True)
written_share = report.get("blend", 1.0)
tuned, _ = load_model(run / "model.pt", "cpu")
start, _ = load_model(start_path, "cpu")
config = tuned.config
# copies: loading a mix into ``tuned`` below overwrites the tensors its state_dict() returns
s0, s1 = start.state_dict(), {k: v.clone() for k, v in tuned.state_dict().items()}
rows = [{"alpha": "start as is", "zoom": start.config.model.image_scale, **B.score(start_path, coco, "cpu")}]
for alpha in a.alphas:
    mixed = {k: torch.lerp(s0[k].to(v.dtype), v, alpha / written_share) if v.is_floating_point() else v
             for k, v in s1.items()}
    tuned.load_state_dict(mixed)
    path = tmp / f"alpha_{alpha:g}.pt"
    save_weights(path, tuned, config)
    rows.append({"alpha": alpha, "zoom": config.model.image_scale, **B.score(path, coco, "cpu")})
for row in rows:
    print(json.dumps({"val": a.val, "start": a.start, "seed": a.seed, "recipe": report["recipe"]["name"],
                      "steps": report["steps"], **{k: (round(v, 2) if isinstance(v, float) else v)
                                                for k, v in row.items()}}), flush=True)
