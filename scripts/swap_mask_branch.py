"""Put one weights file's mask branch (polygon head) onto another file's detector and write the result.

Joint box-only training on new images can move the mask branch away from what it did well (the `neurons` file:
LIVECell val oracle-box IoU 0.747 -> 0.725 over 2,000 steps); the earlier file's branch on the new detector keeps
it (weights/README.md, `neurons` model card). Both files must share the architecture.

    python scripts/swap_mask_branch.py --detector runs/phase_mixed/model.pt \
        --mask-branch weights/cellboxify_livecell_boxes.pt --out runs/phase_mixed_cells_head.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PREFIX = "roi_heads.polygon_head."


def main(argv=None) -> int:
    from napari_cellboxify.checkpoint import load_model, save_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", type=Path, required=True)
    parser.add_argument("--mask-branch", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    model, _ = load_model(args.detector, "cpu")
    donor, _ = load_model(args.mask_branch, "cpu")
    state, branch = model.state_dict(), donor.state_dict()
    if {k for k in state if k.startswith(PREFIX)} != {k for k in branch if k.startswith(PREFIX)}:
        print(f"{args.mask_branch}'s mask branch does not fit {args.detector}'s architecture", file=sys.stderr)
        return 1
    state.update({k: v for k, v in branch.items() if k.startswith(PREFIX)})
    model.load_state_dict(state)
    save_weights(args.out, model, model.config, extra={"detector": args.detector.name,
                                                        "mask_branch": args.mask_branch.name})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
