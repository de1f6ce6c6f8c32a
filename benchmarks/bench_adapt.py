"""Fine-tuning on a few boxes: does ``cellboxify fine-tune`` make the model better on the user's own cells?

For each domain the user's N boxes are all cells in a growing region of one image (the N boxes nearest its
top-left corner, N = 0, 10, 30, 100, all), fine-tuned with ``finetune.fine_tune`` at its defaults (5 minutes;
the start chosen among the shipped files by the training boxes), and scored by segm AP (LIVECell's COCO evaluation) on *other* images of that domain:

- SH-SY5Y: boxes on ``sartorius-shsy5y-1``; scored on the three SH-SY5Y images of ``sartorius-2021`` with exact
  labels (``original/`` f653c5eec0f8, ``reconstructed/`` 5d066f4c3eef and 642d9cbe7f15);
- cortical neurons: boxes on ``sartorius-2021/reconstructed`` 95ac5f4182fa (exact labels, 85 cells); scored on
  the cort image of ``original/`` whose labels sit on its cells (f17f964687b3, 36 cells; afbcea22fc2a's are
  5 px off, ``_label_defects.py``, and no benchmark scores it);
- fluorescence nuclei: boxes on one ``dsb2018/train`` image (4d2cff9a…, 696x520, 119 nuclei); scored on the 25
  fluorescence images of ``dsb2018/val``;
- LIVECell A172 (a type the weights know): boxes on the ``livecell-mini/train`` A172 image; scored on val A172;
- stained-tissue nuclei (a kind no shipped file is for: `nuclei` scores 16 there): boxes on the ``dsb2018/train``
  stained image with the most nuclei (0121d6759c5a, 320x256, 86 nuclei; `nuclei` saw its boxes among 6,501 in
  training); scored on the 3 stained images of ``dsb2018/val`` (58 nuclei: few, so a point moves by several AP).

N = 0 is the default (``cells``) weights as they are. Two seeds a point (``train.seed``: sample order and augmentation). Each
point is kept in ``bench_adapt_points.json`` as soon as it is measured, so an interrupted run resumes; the
RESULTS section and ``adapt.png`` are written from every point measured so far.

    python benchmarks/bench_adapt.py [--domains nuclei shsy5y cort a172 stained] [--boxes 0 10 30 100 all]
        [--seeds 0 1] [--minutes 5] [--device cpu] [--weights auto|cells|nuclei|neurons]

``--weights NAME`` measures another series, every fine-tune started from that shipped file (what the panel does
when its *Model* is not the default), kept beside the ``auto`` one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _scored_sets import merged_coco  # noqa: E402
from _results import provenance, write_section  # noqa: E402

DATA = HERE.parents[1] / "shared" / "data"
POINTS = HERE / "bench_adapt_points.json"
PLOT = HERE / "adapt.png"


def _is(prefix: str):
    return lambda im: im["file_name"].startswith(prefix)


# domain -> (label, (folder, image filter) boxed, [(folder, image filter), ...] scored)
DOMAINS = {
    "shsy5y": ("SH-SY5Y (Sartorius)", ("sartorius-shsy5y-1", _is("0030fd0e6378")),
               [("sartorius-2021/original", _is("f653c5eec0f8")),
                ("sartorius-2021/reconstructed", lambda im: im.get("cell_type") == "shsy5y")]),
    "cort": ("cortical neurons (Sartorius)", ("sartorius-2021/reconstructed", _is("95ac5f4182fa")),
             [("sartorius-2021/original", lambda im: im.get("cell_type") == "cort")]),
    "nuclei": ("fluorescence nuclei (DSB2018)", ("dsb2018/train", _is("4d2cff9a")),
               [("dsb2018/val", lambda im: im.get("modality") == "fluorescence_grayscale")]),
    "a172": ("LIVECell A172 (known type)", ("livecell-mini/train", _is("A172")),
             [("livecell-mini/val", _is("A172"))]),
    "stained": ("stained-tissue nuclei (DSB2018)", ("dsb2018/train", _is("0121d6759c5a")),
                [("dsb2018/val", lambda im: im.get("modality") == "brightfield_stained_color")]),
}


def _folder_files(folder: str) -> tuple[Path, Path]:
    return DATA / folder / "annotations.json", DATA / folder / "images"


def boxed_image(domain: str):
    """(file name, image, all boxes XYXY) of the domain's boxed image."""
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.data.images import read_image

    folder, keep = DOMAINS[domain][1]
    coco = load_coco(*_folder_files(folder))
    entry = next(e for e, im in zip(coco.images, coco.data["images"]) if keep(im))
    return entry.file_name, read_image(entry.path), entry.boxes_xyxy


def grown_region(boxes: np.ndarray, shape: tuple[int, ...], n: int) -> np.ndarray:
    """The ``n`` boxes nearest the image's top-left corner (ranked by the farther of their right/bottom edges,
    relative to the image's size): every cell of a region that grows from the corner."""
    h, w = shape[:2]
    rank = np.maximum(boxes[:, 2] / w, boxes[:, 3] / h)
    return boxes[np.argsort(rank, kind="stable")[:n]]


def score_set(domain: str, workdir: Path):
    """One CocoFile holding every scored image of the domain (images copied into ``workdir``)."""
    from napari_cellboxify.data.coco import load_coco

    images_dir = workdir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    folders = [_folder_files(folder) for folder, _ in DOMAINS[domain][2]]

    def copied(k: int, name: str) -> str:
        target = images_dir / f"{k}_{name}"
        if not target.exists():  # a copy: the reader refuses links that lead outside
            shutil.copyfile(folders[k][1] / name, target)
        return target.name

    merged = merged_coco([(ann, keep) for (ann, _), (_, keep) in zip(folders, DOMAINS[domain][2])], copied)
    path = workdir / "scored.json"
    path.write_text(json.dumps(merged))
    return load_coco(path, images_dir)


def score(weights: Path, coco, device: str) -> dict:
    from napari_cellboxify.evaluate import evaluate
    from napari_cellboxify.predict import Predictor

    metrics = evaluate(Predictor.from_weights(weights, device), coco)
    return {"segm_AP": metrics["segm"]["AP"], "segm_AP50": metrics["segm"]["AP50"], "bbox_AP": metrics["bbox"]["AP"]}


def measure(domain: str, n: int | str, seed: int, minutes: float, device: str, workdir: Path, coco,
            weights: str = "auto") -> dict:
    from napari_cellboxify.finetune import fine_tune
    from napari_cellboxify.weights import default_weights_path, resolve_weights

    if n == 0:  # the start weights as they are: the default ones for "auto"
        start = default_weights_path() if weights == "auto" else resolve_weights(weights)
        return {**score(start, coco, device), "boxes": 0, "wall_s": 0.0, "measured": provenance()}
    name, image, boxes = boxed_image(domain)
    chosen = boxes if n == "all" else grown_region(boxes, image.shape, int(n))
    run = workdir / f"run_{n}_{seed}"
    report = fine_tune([(name, image, chosen)], run, weights=weights, minutes=minutes, device=device, seed=seed)
    return {**score(run / "model.pt", coco, device), "boxes": len(chosen), "wall_s": report.wall_seconds,
            "kept": report.kept, "start": report.start_name or weights, "zoom": report.zoom, "steps": report.steps,
            "best_step": report.best_step,
            "check_before": report.before_ap, "check_fitted_zoom": report.before_ap_fitted_zoom,
            "check_after": report.after_ap, "check_boxes": report.check_boxes, "steady_share": report.steady_share,
            "check_default": report.default_ap, "start_choice": report.start_choice,
            "start_agreement": report.start_agreement,
            "blend": report.blend, "check_as_trained": report.after_ap_unblended, "measured": provenance()}


def series(points: dict) -> list[tuple[str, str, str]]:
    """``(key prefix, domain, start)`` of each measured series, in DOMAINS order: ``domain`` with the start chosen
    (``auto``), then ``domain@name`` started from a named file."""
    prefixes = {k.rsplit("/", 2)[0] for k in points}
    return [(prefix, domain, prefix.partition("@")[2] or "auto") for domain in DOMAINS
            for prefix in sorted(p for p in prefixes if p.partition("@")[0] == domain)]


def series_runs(points: dict, prefix: str, n: str) -> list[dict]:
    """The points of one series at ``n`` boxes, one per seed, in key order."""
    return [v for k, v in sorted(points.items()) if k.startswith(f"{prefix}/{n}/")]


def series_label(domain: str, start: str) -> str:
    return DOMAINS[domain][0] + ("" if start == "auto" else f", from `{start}`")


def load_points() -> dict:
    return json.loads(POINTS.read_text()) if POINTS.exists() else {}


def table(points: dict, minutes: float) -> str:
    lines = [f"Budget {minutes:g} min per fine-tune (the default), `weights=\"auto\"` (the default start choice, "
             "finetune.py); N = 0 is the default `cells` weights as they are. segm AP (LIVECell's evaluation) on the "
             "domain's *other* images, one figure per seed; in brackets the gain over N = 0; wall time of the "
             "fine-tune (start choice, zoom search, checks and training); the start file, what was kept, the zoom "
             "written and the training steps. Rows \"from `name`\" start from that shipped file (`--weights name`, "
             "as the panel does when its Model is not the default); their N = 0 is that file as it is, and their "
             "gains too are over the default `cells`. Every point ran with the shipped files of 2026-12-07, at the "
             "commit listed under the table: a point was measured again whenever a later change to the fine-tune "
             "could change what it runs (CHANGELOG.md has each change with the figures before and after); where "
             "the change provably leaves the run as it was (the same start file and zoom chosen, checked without "
             "training), the earlier measurement stands. Cortical neurons are scored on one image, 36 cells: the "
             "labels of the other cort image of `original/` sit 5 px off its cells, and no benchmark scores it "
             "(docs/experiments/2026-12-07-misregistered-cortical-labels.md).", "",
             "| domain | N boxes | segm AP per seed | mean (gain) | segm AP50 | fine-tune wall s | start → kept; zoom; steps |",
             "|---|---|---|---|---|---|---|"]
    measured = []
    for prefix, domain, start in series(points):
        label = series_label(domain, start)
        base = points.get(f"{domain}/0/0")  # gains are over the default weights, whatever the start
        base_ap = base["segm_AP"] if base else None
        for n in ("0", "10", "30", "100", "all"):
            runs = series_runs(points, prefix, n)
            if not runs:
                continue
            aps = [r["segm_AP"] for r in runs]
            mean = float(np.mean(aps))
            gain = f" ({mean - base_ap:+.1f})" if base_ap is not None and (n != "0" or start != "auto") else ""
            walls = ", ".join(f"{r['wall_s']:.0f}" for r in runs) if n != "0" else "-"
            kept = "; ".join(f"{r.get('start', 'cells')} → {r['kept']}, {r['zoom']:g}, {r['steps']}" for r in runs
                             ) if n != "0" else "-"
            count = runs[0]["boxes"]
            lines.append(f"| {label} | {n if n != 'all' else f'all ({count})'} | "
                         f"{' / '.join(f'{a:.1f}' for a in aps)} | {mean:.1f}{gain} | "
                         f"{np.mean([r['segm_AP50'] for r in runs]):.1f} | {walls} | {kept} |")
        when = sorted({v.get("measured", "not recorded") for k, v in points.items()
                       if k.startswith(f"{prefix}/") and not k.startswith(f"{prefix}/0/")})
        if when:
            measured.append(f"- {label}: " + "; ".join(when))
    # Points are cached across runs and commits: say when each series' fine-tunes were measured.
    return "\n".join(lines + ["", "Fine-tunes measured (N > 0):", ""] + measured)


def plot(points: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    colours = {}
    for prefix, domain, start in series(points):
        label = series_label(domain, start)
        xs, ys, lo, hi = [], [], [], []
        for n in ("0", "10", "30", "100", "all"):
            runs = series_runs(points, prefix, n)
            if runs:
                aps = [r["segm_AP"] for r in runs]
                xs.append(max(runs[0]["boxes"], 1) if n != "0" else 0.0)
                ys.append(float(np.mean(aps)))
                lo.append(min(aps))
                hi.append(max(aps))
        if xs:
            # a named start shares its domain's colour, dashed
            line, = ax.plot([max(x, 3) for x in xs], ys, "o-" if start == "auto" else "s--", label=label,
                            color=colours.get(domain))
            colours.setdefault(domain, line.get_color())
            ax.vlines([max(x, 3) for x in xs], lo, hi, color=line.get_color(), alpha=0.5)
    ax.set_xscale("log")
    ax.set_xticks([3, 10, 30, 100, 300])
    ax.set_xticklabels(["0", "10", "30", "100", "300"])
    ax.set_xlabel("boxes drawn (one image, growing region)")
    ax.set_ylabel("segm AP on other images")
    ax.set_title("cellboxify fine-tune: 5 min on the boxes drawn")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, not over them
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domains", nargs="+", choices=list(DOMAINS), default=list(DOMAINS))
    parser.add_argument("--boxes", nargs="+", default=["0", "10", "30", "100", "all"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default="auto",
                        help="start: auto (the default: chosen by the boxes) or a shipped name (its own series)")
    args = parser.parse_args(argv)
    missing = [d for d in args.domains if not _folder_files(DOMAINS[d][1][0])[0].exists()]
    if missing:
        print(f"skipped: data for {', '.join(missing)} not found under {DATA} (see ../shared/data/README.md)")
        return 0
    points = load_points()
    with tempfile.TemporaryDirectory() as tmp:
        for domain in args.domains:
            workdir = Path(tmp) / domain
            coco = score_set(domain, workdir)
            available = len(boxed_image(domain)[2])
            for n in args.boxes:
                if n not in ("0", "all") and int(n) >= available:
                    continue  # "all" is that point
                for seed in (args.seeds if n != "0" else [0]):
                    key = f"{domain}{'' if args.weights == 'auto' else '@' + args.weights}/{n}/{seed}"
                    if key in points:
                        continue
                    t0 = time.time()
                    points[key] = measure(domain, n if n == "all" else int(n), seed, args.minutes, args.device,
                                          workdir, coco, args.weights)
                    print(key, json.dumps(points[key]), f"({time.time() - t0:.0f} s)", flush=True)
                    POINTS.write_text(json.dumps(points, indent=1, sort_keys=True))
    plot(points, PLOT)
    write_section("Fine-tuning on a few boxes", table(points, args.minutes) + f"\n\nPlot: [{PLOT.name}]({PLOT.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
