"""The images a benchmark scores, gathered from several COCO folders into one annotation file.

Every benchmark that scores shipped or fine-tuned weights builds its sets here, so that an image whose labels do not
sit on its cells (``_label_defects.py``) is left out in one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from _label_defects import registered

# The images of sartorius-2021/reconstructed with exact labels (sartorius-2021/PROVENANCE.md): scored, never trained
# or chosen on (scripts/mixed_training_set.py holds them out as HELD_OUT).
SARTORIUS_EXACT = ("5d066f4c3eef", "642d9cbe7f15", "95ac5f4182fa")


def merged_coco(parts: Sequence[tuple[Path, Callable[[dict], bool]]],
                rename: Callable[[int, str], str]) -> dict:
    """One COCO dict of the images of ``parts`` (annotation file, filter on its image entries) that pass their
    filter and whose labels are registered, with their annotations; ids renumbered from 1, one category, and each
    file name ``rename(part index, file name)``."""
    merged: dict = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cell"}]}
    for k, (ann_file, keep) in enumerate(parts):
        data = json.loads(Path(ann_file).read_text())
        ids = {}
        for entry in data["images"]:
            if keep(entry) and registered(entry["file_name"]):
                ids[entry["id"]] = len(merged["images"]) + 1
                merged["images"].append(dict(entry, id=ids[entry["id"]], file_name=rename(k, entry["file_name"])))
        for ann in data["annotations"]:
            if ann["image_id"] in ids:
                merged["annotations"].append(dict(ann, id=len(merged["annotations"]) + 1,
                                                  image_id=ids[ann["image_id"]], category_id=1))
    return merged
