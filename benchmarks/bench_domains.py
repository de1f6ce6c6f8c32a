"""Each shipped weights file on each domain: segm AP / AP50 (LIVECell's evaluation) and the oracle-box IoU.

The headline table of benchmarks/RESULTS.md ("Shipped weights by domain"), which the README quotes. Domains, all
images the weights were not trained or chosen on (the files were chosen on these val splits, so these are val
figures; the images kept outside ../shared/data check them independently):
- LIVECell val: livecell-mini/val (5 images, 5 cell types);
- Sartorius exact-label: sartorius-2021/original (3) and the 3 reconstructed images with exact labels
  (SH-SY5Y, cortical neurons), phase contrast, less original/afbcea22fc2a, whose labels sit 5 px off its cells
  (``_label_defects.py``, applied in ``_scored_sets.py``);
- DSB2018 val fluorescence: dsb2018/val, its 25 fluorescence images.
The oracle-box IoU gives each cell its true box and scores the outline against its mask, beside the inscribed
ellipse of the same box. Points are kept in bench_domains_points.json by weights sha256 and the images scored,
so a rerun measures only what changed.

``auto`` is what ``cellboxify evaluate`` does without ``--weights``: it chooses the shipped file that agrees most
with itself on 3 images spread through the domain's set (flip_agreement.choose_shipped), then scores that file;
its row is the chosen file's point.

    python benchmarks/bench_domains.py [--weights cells nuclei auto] [--domains livecell sartorius dsb_fluo]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _scored_sets import SARTORIUS_EXACT, merged_coco  # noqa: E402
from _results import provenance, write_section  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
POINTS = HERE / "bench_domains_points.json"
DOMAINS = {
    "livecell": "LIVECell val (5 images)",
    "sartorius": "Sartorius exact-label (5 images)",
    "dsb_fluo": "DSB2018 val fluorescence (25 images)",
}


def domain_coco(domain: str, folder: Path) -> tuple[Path, Path] | None:
    """(annotation file, image folder) of a domain, a filtered copy written into ``folder``; None when absent."""
    if domain == "livecell":
        path = DATA / "livecell-mini" / "val"
        return (path / "annotations.json", path / "images") if (path / "annotations.json").exists() else None
    if domain == "sartorius":
        root = DATA / "sartorius-2021"
        parts = [("original", lambda entry: True),
                 ("reconstructed", lambda entry: entry.get("sartorius_id") in SARTORIUS_EXACT)]
    else:
        root = DATA / "dsb2018"
        parts = [("val", lambda entry: entry.get("modality") == "fluorescence_grayscale")]
    if not all((root / sub / "annotations.json").exists() for sub, _ in parts):
        return None
    merged = merged_coco([(root / sub / "annotations.json", keep) for sub, keep in parts],
                         lambda k, name: f"{parts[k][0]}/images/{name}")
    path = folder / f"{domain}.json"
    path.write_text(json.dumps(merged))
    return path, root


def point_key(weights: str, digest: str, domain: str, annotations: Path) -> str:
    """The cache key of a point: the file (name, sha256 prefix), the domain and the images scored (a digest of
    their names), so that a change to a domain's image set is measured again."""
    names = sorted(im["file_name"] for im in json.loads(Path(annotations).read_text())["images"])
    images = hashlib.sha256("\n".join(names).encode()).hexdigest()[:8]
    return f"{weights}:{digest}:{domain}:{images}"


def measure(weights: str, found: tuple[Path, Path]) -> dict:
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.evaluate import evaluate, oracle_box_iou
    from napari_cellboxify.predict import Predictor

    coco = load_coco(*found)
    predictor = Predictor.from_weights(weights, device="cpu")
    t0 = time.time()
    metrics = evaluate(predictor, coco)
    oracle = oracle_box_iou(predictor, coco)
    return {"segm_AP": metrics["segm"]["AP"], "segm_AP50": metrics["segm"]["AP50"], "bbox_AP": metrics["bbox"]["AP"],
            "oracle_iou": oracle["mean_iou_model"], "ellipse_iou": oracle["mean_iou_ellipse"],
            "images": len(coco.images), "cells": len(coco.data["annotations"]), "seconds": time.time() - t0,
            "zoom": predictor.image_scale,
            "measured": provenance()}


def choose(found: tuple[Path, Path]) -> dict:
    """``--weights auto`` on a domain's set, as ``cellboxify evaluate`` runs it: the file chosen and why."""
    from napari_cellboxify.data.coco import load_coco
    from napari_cellboxify.flip_agreement import choose_shipped, planes_to_choose_on

    coco = load_coco(*found)
    t0 = time.time()
    planes = planes_to_choose_on([image.path for image in coco.images])
    chosen, agreement = choose_shipped(planes, device="cpu")
    return {"chosen": chosen, "agreement": agreement, "images": len(planes), "seconds": time.time() - t0,
            "measured": provenance()}


def main(argv=None) -> int:
    from napari_cellboxify.weights import SHIPPED, WeightsError, resolve_weights, sha256_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=[*SHIPPED, "auto"], help="shipped names, auto or files")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    parser.add_argument("--measure-only", action="store_true", help="keep the points, do not write RESULTS.md")
    args = parser.parse_args(argv)
    points = json.loads(POINTS.read_text()) if POINTS.exists() else {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = {}  # each domain's scored set, written once for every file
        for domain in args.domains:
            found = domain_coco(domain, Path(tmp))
            if found is None:
                print(f"skipped {domain}: its data is not in {DATA}")
            else:
                sets[domain] = found

        def point(key: str, how) -> dict:
            if key not in points:
                points[key] = how()
                POINTS.write_text(json.dumps(points, indent=1, sort_keys=True))
            print(key, points[key], flush=True)
            return points[key]

        for weights in args.weights:
            try:
                paths = {name: resolve_weights(name) for name in (list(SHIPPED) if weights == "auto" else [weights])}
                digests = {name: sha256_of(path)[:12] for name, path in paths.items()}
            except WeightsError as exc:
                print(f"skipped {weights}: {exc}")
                continue
            for domain, found in sets.items():
                label, choice, auto = weights, weights, None
                if weights == "auto":  # the choice is cached by all three files, then the chosen file's point
                    auto = point(point_key("auto", "+".join(d[:6] for d in digests.values()), domain, found[0]),
                                 lambda: choose(found))
                    choice = auto["chosen"]
                    # in SHIPPED's order: the cached points are stored with their keys sorted
                    label = (f"auto → `{choice}` (agreement "
                             + " / ".join(f"{n} {auto['agreement'][n]:.2f}" for n in SHIPPED) + ")")
                p = point(point_key(choice, digests[choice], domain, found[0]), lambda: measure(choice, found))
                rows.append((label, choice, paths[choice].name, domain, p, auto))
    if args.measure_only or not rows:
        return 0
    lines = ["segm AP and AP50 at LIVECell's evaluation (IoU 0.50:0.95, 2,000 detections per image); oracle IoU: "
             "mean mask IoU of each cell's outline from its true box, beside the box's inscribed ellipse. "
             "Each file at its own zoom. These are val images: `cells` and `nuclei` were chosen on them; `neurons` was "
             "chosen on LIVECell val and on 6 overlay-decoded Sartorius images, not on the exact-label ones, so its "
             "Sartorius figure is on images it was neither trained nor chosen on (weights/README.md). The Sartorius "
             "exact-label images are those of sartorius-2021 whose labels sit on their cells: original/afbcea22fc2a's "
             "are 5 px off (docs/experiments/2026-12-07-misregistered-cortical-labels.md). Rows `auto`: what "
             "`cellboxify predict` and `evaluate` do without `--weights`: the shipped file that agrees most with itself "
             "on 3 of the set's images and their mirror images (mean matched F1 at box IoU 0.5) is chosen, then scored; "
             "the rule was chosen on other val images (docs/experiments/2026-12-07-label-free-start-choice.md).",
             "", "| weights | domain | images / cells | segm AP | AP50 | bbox AP | oracle IoU | ellipse IoU |",
             "|---|---|---|---|---|---|---|---|"]
    for label, _, name, domain, p, auto in rows:
        shown = label if auto else f"`{label}`"
        lines.append(f"| {shown} ({name}, zoom {p['zoom']:g}) | {DOMAINS[domain]} | {p['images']} / {p['cells']} | "
                     f"**{p['segm_AP']:.1f}** | {p['segm_AP50']:.1f} | {p['bbox_AP']:.1f} | {p['oracle_iou']:.3f} | "
                     f"{p['ellipse_iou']:.3f} |")
    # Points are cached by file and images scored, so a rerun measures only what changed: say when each row was.
    measured: dict[str, dict[str, list[str]]] = {}
    for _, choice, _, domain, p, auto in rows:
        dated = [(f"`{choice}`", p.get("measured", "before 2026-12-07 (not recorded)"))]
        if auto:  # an auto row is the chosen file's point: its choice has a date of its own
            dated.append(("auto's choice", auto["measured"]))
        for w, when in dated:
            domains = measured.setdefault(w, {}).setdefault(when, [])
            if DOMAINS[domain].split(" (")[0] not in domains:
                domains.append(DOMAINS[domain].split(" (")[0])
    lines += ["", "Measured: " + "; ".join(
        f"{w} " + ", ".join(f"{when} ({' and '.join(domains)})" if len(by_when) > 1 else when
                            for when, domains in by_when.items())
        for w, by_when in measured.items()) + "."]
    write_section("Shipped weights by domain", "\n".join(lines), first=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
