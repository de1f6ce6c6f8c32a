"""Speed, side by side in one run: CellBoxify vs stock torchvision Mask R-CNN, same backbone and detections.

- inference: image -> full-resolution instance masks for a 704x520 LIVECell val image (~300 cells);
- training: one step, ours box-only vs stock Mask R-CNN fully supervised, same image and GT;
- the number of tensor operations each dispatches (a GPU step of small kernels is bound by their launches); on a
  CPU also with the rasteriser as a GPU runs it (edges in chunks), the count a GPU step would dispatch.
Both models are randomly initialised (timings do not depend on the weights), with the score threshold at 0 and
the detection cap at the image's cell count so both produce the same number of instances.

    python benchmarks/bench_speed.py [--backbone resnet50] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

from napari_cellboxify.config import CellBoxifyConfig  # noqa: E402
from napari_cellboxify.data.coco import CocoSource, load_coco  # noqa: E402
from napari_cellboxify.data.dataset import to_target  # noqa: E402
from napari_cellboxify.data.transforms import to_model_input  # noqa: E402
from napari_cellboxify.model import build_model  # noqa: E402

VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "livecell-mini" / "val"


def stock_maskrcnn(config: CellBoxifyConfig, n_dets: int):
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.rpn import RPNHead

    from napari_cellboxify.model.detector import build_backbone

    m = config.model
    backbone, _ = build_backbone(config, load_pretrained=False)
    anchors = AnchorGenerator(tuple((s,) for s in m.anchor_sizes), (tuple(m.aspect_ratios),) * 5)
    model = MaskRCNN(backbone, num_classes=2, rpn_anchor_generator=anchors,
                     rpn_head=RPNHead(backbone.out_channels, len(m.aspect_ratios)),
                     rpn_pre_nms_top_n_test=m.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=m.rpn_post_nms_top_n_test,
                     rpn_pre_nms_top_n_train=m.rpn_pre_nms_top_n_train,
                     rpn_post_nms_top_n_train=m.rpn_post_nms_top_n_train,
                     box_score_thresh=0.0, box_detections_per_img=n_dets, min_size=520, max_size=1333)
    return model


def count_operations(fn) -> int:
    """Tensor operations ``fn`` dispatches (forward and backward). On a GPU each is at least one kernel launch, and
    a step of small kernels is bound by their number, not their arithmetic: this counts what a CPU run can see."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.calls


def accelerator_raster():
    """A context in which the rasteriser takes edges in chunks, as it does on an accelerator, on any device: what a
    CPU run can count of a GPU step (on a CPU it takes one edge at a time: faster there, with ~25x the raster's
    operations)."""
    from unittest import mock

    from napari_cellboxify.losses import rasterize

    return mock.patch.object(rasterize, "_nearest_edges", rasterize._nearest_edges_in_chunks)


def timed(fn, repeats: int, sync) -> list[float]:
    fn()  # warm-up
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def speed_setup(default_repeats: int):
    """Arguments, device and the image shared by the speed benchmarks (this one and bench_inference_stages.py):
    the val image closest to 300 cells, with a config whose detection cap is its cell count and score threshold 0.

    Returns (args, device, sync, config, file name, sample).
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--repeats", type=int, default=default_repeats)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if not (VAL / "annotations.json").exists():
        sys.exit(f"LIVECell mini data not found at {VAL}")
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)

    config = CellBoxifyConfig()
    config.model.backbone = args.backbone
    config.model.pretrained_backbone = False
    coco = load_coco(VAL / "annotations.json", VAL / "images")
    counts = [len(im.boxes_xyxy) for im in coco.images]
    index = int(np.argmin([abs(c - 300) for c in counts]))  # the image closest to 300 cells
    config.model.box_score_thresh = 0.0
    config.model.detections_per_img = counts[index]
    source = CocoSource(coco, config, with_masks=True)
    source.images = coco.images  # keep the file's order
    return args, device, sync, config, coco.images[index].file_name, source.load(index)


def main() -> None:
    args, device, sync, config, name, sample = speed_setup(default_repeats=3)
    n_cells = config.model.detections_per_img
    image = to_model_input(sample.image).to(device)
    target = {k: v.to(device) for k, v in to_target(sample.boxes_xyxy, sample.masks).items()}
    box_target = {k: v for k, v in target.items() if k != "masks"}

    ours = build_model(config, load_pretrained=False).to(device)
    stock = stock_maskrcnn(config, n_cells).to(device)

    def infer(model):
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            out = model([image])[0]
        assert len(out["masks"]) == n_cells, len(out["masks"])

    def train(model, tgt):
        model.train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        def step():
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                losses = model([image], [tgt])
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        return step

    rows = []
    t_ours = timed(lambda: infer(ours), args.repeats, sync)
    t_stock = timed(lambda: infer(stock), args.repeats, sync)
    rows.append(("inference, image -> instance masks (s)", t_ours, t_stock))
    t_ours_tr = timed(train(ours, box_target), args.repeats, sync)
    t_stock_tr = timed(train(stock, target), args.repeats, sync)
    rows.append(("one training step, ours box-only, stock full masks (s)", t_ours_tr, t_stock_tr))
    counts = [("operations dispatched, inference", count_operations(lambda: infer(ours)),
               count_operations(lambda: infer(stock))),
              ("operations dispatched, one training step", count_operations(train(ours, box_target)),
               count_operations(train(stock, target)))]
    if device.type == "cpu":
        with accelerator_raster():
            counts.append(("operations dispatched, one training step, raster as on a GPU (edges in chunks)",
                           count_operations(train(ours, box_target)), count_operations(train(stock, target))))

    lines = [
        f"Image `{name}` ({sample.image.shape[1]}x{sample.image.shape[0]}, {n_cells} annotated cells, "
        f"{n_cells} detections from both models), backbone {args.backbone}-FPN, device {device.type}"
        f"{' (AMP)' if device.type == 'cuda' else ''}, median of {args.repeats} runs after one warm-up.",
        "",
        "Operations: tensor operations dispatched (forward and backward), each at least one kernel launch on a GPU. "
        "The rasteriser takes one polygon edge at a time on a CPU (faster there) and edges in chunks on a GPU; "
        "on a CPU run the last row counts our step as a GPU would run it.",
        "",
        "| what | CellBoxify | stock Mask R-CNN | ratio ours/stock |",
        "|---|---|---|---|",
    ]
    for what, a, b in rows:
        ma, mb = statistics.median(a), statistics.median(b)
        lines.append(f"| {what} | {ma:.3f} | {mb:.3f} | {ma / mb:.2f} |")
    for what, a, b in counts:
        lines.append(f"| {what} | {a:,} | {b:,} | {a / b:.2f} |")
    write_section(f"Speed ({args.backbone}, {device.type})", "\n".join(lines))


if __name__ == "__main__":
    main()
