"""Where CellBoxify's inference time goes, stage by stage, on the speed benchmark's image (bench_speed.py).

Stages are timed with forward hooks (the device synchronised at each boundary, so the parts add up to a little more
than an unhooked run): backbone + FPN, RPN, box head (RoI pooling, two-layer head, NMS), polygon head (RoI pooling,
then the refinement stages), and mask pasting (polygons -> (N, H, W) masks), the last both ways: on the device
(``model/paste.py``, what the model does) and on the host with scikit-image plus the copy back (what the model did
before paste.py, and on a CPU until 2026-11-28). Random weights, score threshold 0, detections capped at the image's
cells.

    python benchmarks/bench_inference_stages.py [--backbone resnet50] [--repeats 5] [--device cuda]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

from bench_speed import speed_setup  # noqa: E402

from napari_cellboxify.data.transforms import to_model_input  # noqa: E402
from napari_cellboxify.geometry import polygons_to_masks  # noqa: E402
from napari_cellboxify.model import build_model  # noqa: E402
from napari_cellboxify.model.paste import polygons_to_masks_torch  # noqa: E402


def main() -> None:
    args, device, sync, config, image_name, sample = speed_setup(default_repeats=5)
    image = to_model_input(sample.image).to(device)
    shape = tuple(sample.image.shape[:2])

    config.model.paste_masks = False  # pasting is timed on its own below
    model = build_model(config, load_pretrained=False).to(device).eval()
    times: dict[str, list[float]] = defaultdict(list)
    current: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}

    def hook(name, module):
        def pre(*_):
            sync()
            starts[name] = time.perf_counter()

        def post(*_):
            sync()  # summed over the calls of one forward pass (the polygon head runs in chunks of RoIs)
            current[name] += time.perf_counter() - starts[name]

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    stages = {"backbone + FPN": model.backbone, "RPN": model.rpn, "RoI heads": model.roi_heads,
              "polygon RoI pooling": model.roi_heads.polygon_roi_pool,
              "polygon refinement": model.roi_heads.polygon_head}
    for name, module in stages.items():
        hook(name, module)

    def forward():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            return model([image])[0]

    def paste_device(polys):
        polygons_to_masks_torch(polys, shape)
        sync()

    def paste_host(polys):
        masks = polygons_to_masks(polys.float().cpu().numpy(), shape)
        torch.from_numpy(masks[:, None]).to(device)
        sync()

    out = forward()  # warm-up
    polys = out["polygons"].detach()
    paste_device(polys)
    paste_host(polys)
    current.clear()
    totals, dev, host = [], [], []
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        out = forward()
        sync()
        totals.append(time.perf_counter() - t0)
        for name, seconds in current.items():
            times[name].append(seconds)
        current.clear()
        t0 = time.perf_counter()
        paste_device(out["polygons"].detach())
        dev.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        paste_host(out["polygons"].detach())
        host.append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    med["box head (pool, MLP, NMS)"] = med.pop("RoI heads") - med["polygon RoI pooling"] - med["polygon refinement"]
    total = statistics.median(totals)
    lines = [
        f"Image `{image_name}` ({shape[1]}x{shape[0]}, {len(polys)} detections), random-weight "
        f"{args.backbone}-FPN CellBoxify on {device.type}{' (AMP)' if device.type == 'cuda' else ''}, median of "
        f"{args.repeats} runs after one warm-up; stages timed with synchronising hooks.",
        "",
        "| stage | seconds | share of the forward pass |",
        "|---|---|---|",
    ]
    for name in ("backbone + FPN", "RPN", "box head (pool, MLP, NMS)", "polygon RoI pooling", "polygon refinement"):
        lines.append(f"| {name} | {med[name]:.4f} | {100 * med[name] / total:.0f} % |")
    lines.append(f"| forward pass without pasting (hooked) | {total:.4f} | 100 % |")
    lines.append(f"| mask pasting on the {device.type} (model/paste.py) | {statistics.median(dev):.4f} | - |")
    lines.append(f"| mask pasting on the host (scikit-image) + copy | {statistics.median(host):.4f} | - |")
    write_section(f"Inference time by stage ({args.backbone}, {device.type})", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
