"""By-hand diagnostic: on stained-tissue nuclei (a kind no shipped file is for), the fine-tune kept `nuclei` as
it is at every N of bench_adapt. Would the fine-tuned weights have done better on the other stained images?

Fine-tunes bench_adapt's stained domain (boxes on dsb2018/train 0121d6759c5a; scored on the 3 stained images of
dsb2018/val) with ``force=True`` (the fine-tuned weights written whatever the kept-aside boxes say), seed 0, at
30 and all 86 boxes for 5 minutes and at all boxes for 15, and scores each. Run from the repository root with
nothing else on the CPU (about 27 minutes on 2 cores):

    python docs/experiments/2026-12-08-forced-fine-tune-on-stained-nuclei.py

Result (2026-12-08, AMD EPYC, 2 cores; bench_adapt's unforced points for comparison: `nuclei` kept, 15.7):

| boxes, minutes | kept-aside boxes (detection AP, start -> fine-tuned) | segm AP on the 3 stained val images |
|---|---|---|
| 30, 5 (1,399 steps) | 6 boxes: 4.7 -> 5 | 12.3 |
| all 86, 5 (583 steps) | 17 boxes: 11.5 -> 14 | 11.1 |
| all 86, 15 (1,827 steps) | 17 boxes: 11.5 -> 15 | 9.8 |

The kept-aside boxes lie in the boxed image and rise; the other images fall, the more the longer it trains.
"""
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_adapt  # noqa: E402

from napari_cellboxify.finetune import fine_tune  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        coco = bench_adapt.score_set("stained", tmp / "set")
        name, image, boxes = bench_adapt.boxed_image("stained")
        for n, minutes in (("all", 5), (30, 5), ("all", 15)):
            chosen = boxes if n == "all" else bench_adapt.grown_region(boxes, image.shape, n)
            run = tmp / f"run_{n}_{minutes}"
            report = fine_tune([(name, image, chosen)], run, weights="auto", minutes=minutes, device="cpu", seed=0,
                               force=True)
            print(n, minutes, report.summary(), json.dumps(bench_adapt.score(run / "model.pt", coco, "cpu")),
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
