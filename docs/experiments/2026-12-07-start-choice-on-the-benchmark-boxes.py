"""What fine_tune(weights="auto") starts from on bench_adapt's boxes, by the training boxes and flip agreement
(no training): each shipped file's best bbox AP on the training boxes over the zooms searched, its flip agreement
on the boxed image (measured for every file here; fine_tune measures it only for the files the boxes leave in),
the files within min_gain of the best, and the choice. Run from the repository root:

    python docs/experiments/2026-12-07-start-choice-on-the-benchmark-boxes.py shsy5y cort a172 nuclei
"""
import sys, time, json
sys.path.insert(0, "benchmarks")
import torch
import bench_adapt as B
from napari_cellboxify import finetune as F
from napari_cellboxify.check_boxes import split_check_boxes, min_gain
from napari_cellboxify.weights import SHIPPED, resolve_weights
torch.set_num_threads(2)
for domain in sys.argv[1:]:
    name, image, boxes = B.boxed_image(domain)
    agree = None
    for n in (10, 30, 100, "all"):
        if n != "all" and n >= len(boxes): continue
        chosen = boxes if n == "all" else B.grown_region(boxes, image.shape, n)
        items = [(name, image, chosen)]
        splits = split_check_boxes([(name, image.shape[:2], chosen)])
        n_check = sum(len(s.check_boxes) for s in splits)
        t = time.time()
        starts = {k: F._start_point(resolve_weights(k), items, splits, "cpu", None) for k in SHIPPED}
        t1 = time.time() - t
        if agree is None:
            t = time.time(); agree = {k: round(F._agreement(p, items), 3) for k, p in starts.items()}; t2 = time.time() - t
        best = max(p.fit_ap for p in starts.values())
        plausible = [k for k, p in starts.items() if p.fit_ap >= best - min_gain(len(chosen) - n_check)]
        choice = max(plausible, key=lambda k: (agree[k] if len(plausible) > 1 else 0, k == "cells"))
        print(json.dumps({"domain": domain, "n": n, "fit": {k: round(p.fit_ap, 1) for k, p in starts.items()},
                          "agree": agree, "plausible": plausible, "choice": choice, "t_start": round(t1), "t_agree": round(t2)}), flush=True)
