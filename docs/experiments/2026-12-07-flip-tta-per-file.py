"""By-hand check: what test-time augmentation ("flips": the 8 flips and transposes, boxes fused) buys each shipped
file on the images it was chosen on, and at what cost on 2 CPU cores.

    python scripts/mixed_training_set.py --out runs/data/sartorius --livecell-repeats 0 --val sartorius
    python docs/experiments/2026-12-07-flip-tta-per-file.py cells livecell
    python docs/experiments/2026-12-07-flip-tta-per-file.py nuclei dsb_fluo
    python docs/experiments/2026-12-07-flip-tta-per-file.py neurons sartorius_val

``sartorius_val`` is the 6 overlay-decoded images `neurons` was chosen on (runs/data/sartorius/val); the other
domains are bench_domains' (LIVECell val, DSB2018 val fluorescence). Run with nothing else on the CPU.
"""
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
import bench_domains  # noqa: E402
from napari_cellboxify.data.coco import load_coco  # noqa: E402
from napari_cellboxify.evaluate import evaluate  # noqa: E402
from napari_cellboxify.predict import Predictor  # noqa: E402

torch.set_num_threads(2)
weights, domain = sys.argv[1], sys.argv[2]
if domain == "sartorius_val":
    coco = load_coco("runs/data/sartorius/val/annotations.json", "runs/data/sartorius/val/images")
else:
    coco = load_coco(*bench_domains.domain_coco(domain, Path(tempfile.mkdtemp())))
for tta in ("off", "flips"):
    t0 = time.time()
    metrics = evaluate(Predictor.from_weights(weights, "cpu", overrides=[f"model.tta={tta}"]), coco)
    print(f"{weights} {domain} tta {tta}: segm AP {metrics['segm']['AP']:.2f}, AP50 {metrics['segm']['AP50']:.2f}, "
          f"bbox AP {metrics['bbox']['AP']:.2f}, {time.time() - t0:.0f} s for {len(coco.images)} images", flush=True)
