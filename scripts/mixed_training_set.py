"""Build the training set of the phase-contrast `cells` weights: livecell-mini/train and the overlay-decoded
images of sartorius-2021/reconstructed, boxes only; val is livecell-mini/val (what the weights are chosen on).

The three exact-label images of ``reconstructed/`` (5d066f4c3eef, 642d9cbe7f15, 95ac5f4182fa) and all of
``original/`` are left out: they are where Sartorius figures are reported (and benchmarks/bench_adapt.py scores
or boxes them). LIVECell's 10 images are repeated ``--livecell-repeats`` times so that, sampled image by image,
they are not outweighed by Sartorius's 43 (their cells are also what ``cells`` must not forget).

    python scripts/mixed_training_set.py --out runs/data/phase_mixed
    python scripts/mixed_training_set.py --out runs/data/sartorius --livecell-repeats 0 --val sartorius

``--val sartorius`` chooses on neuronal cultures instead: every seventh overlay-decoded image (sorted by id, from
the fourth: 6 images) is held out of training, with its decoded masks, as val (PROVENANCE.md: they match the exact
labels at mean per-cell IoU 0.94 or more).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HELD_OUT = ("5d066f4c3eef", "642d9cbe7f15", "95ac5f4182fa")


def sartorius_val_ids(sartorius: Path) -> set[str]:
    """The overlay-decoded images ``--val sartorius`` chooses on: a fixed seventh, spread over the sorted ids."""
    images = json.loads((sartorius / "annotations.json").read_text())["images"]
    decoded = sorted(im["sartorius_id"] for im in images if not im["file_name"].startswith(HELD_OUT))
    return set(decoded[3::7])


def copy_subset(folder: Path, keep, out: Path) -> int:
    """``folder``'s images that ``keep`` accepts, with their full annotations (masks included: val scores them)."""
    data = json.loads((folder / "annotations.json").read_text())
    (out / "images").mkdir(parents=True, exist_ok=True)
    images = [im for im in data["images"] if keep(im)]
    ids = {im["id"] for im in images}
    for im in images:
        shutil.copyfile(folder / "images" / im["file_name"], out / "images" / im["file_name"])
    (out / "annotations.json").write_text(json.dumps(dict(data, images=images, annotations=[
        a for a in data["annotations"] if a["image_id"] in ids])))
    return len(images)


def boxes_only(folder: Path, keep, prefix: str, out_images: Path, merged: dict) -> int:
    data = json.loads((folder / "annotations.json").read_text())
    ids = {}
    for im in data["images"]:
        if keep(im):
            ids[im["id"]] = len(merged["images"]) + 1
            name = prefix + im["file_name"]
            if not (out_images / name).exists():  # copies: the reader refuses links that lead outside
                shutil.copyfile(folder / "images" / im["file_name"], out_images / name)
            merged["images"].append({k: im[k] for k in ("file_name", "width", "height") if k in im}
                                    | {"id": ids[im["id"]], "file_name": name})
    for ann in data["annotations"]:
        if ann["image_id"] in ids:
            merged["annotations"].append({"id": len(merged["annotations"]) + 1, "image_id": ids[ann["image_id"]],
                                          "category_id": 1, "bbox": ann["bbox"], "iscrowd": 0,
                                          "area": ann["bbox"][2] * ann["bbox"][3]})
    return len(ids)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--livecell-repeats", type=int, default=3)
    parser.add_argument("--val", choices=("livecell", "sartorius"), default="livecell",
                        help="what the weights are chosen on: livecell-mini/val, or 6 overlay-decoded Sartorius images")
    args = parser.parse_args(argv)
    livecell, sartorius = DATA / "livecell-mini", DATA / "sartorius-2021" / "reconstructed"
    if not (livecell / "train").exists() or not sartorius.exists():
        print(f"skipped: livecell-mini or sartorius-2021 not found under {DATA}")
        return 0
    train_images = args.out / "train" / "images"
    train_images.mkdir(parents=True, exist_ok=True)
    merged = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    for k in range(args.livecell_repeats):
        boxes_only(livecell / "train", lambda im: True, f"r{k}_", train_images, merged)
    val_ids = sartorius_val_ids(sartorius) if args.val == "sartorius" else set()
    n = boxes_only(sartorius, lambda im: not im["file_name"].startswith(HELD_OUT) and im["sartorius_id"] not in val_ids,
                   "sartorius_", train_images, merged)
    (args.out / "train" / "annotations.json").write_text(json.dumps(merged))
    val = args.out / "val"
    if val.exists():
        shutil.rmtree(val)
    if args.val == "sartorius":
        copy_subset(sartorius, lambda im: im["sartorius_id"] in val_ids, val)
        chosen_on = f"{len(val_ids)} overlay-decoded Sartorius images ({', '.join(sorted(val_ids))})"
    else:
        shutil.copytree(livecell / "val", val)
        chosen_on = "livecell-mini/val"
    print(f"{len(merged['images'])} training images ({args.livecell_repeats} x 10 LIVECell, {n} Sartorius), "
          f"{len(merged['annotations'])} boxes; val: {chosen_on}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
