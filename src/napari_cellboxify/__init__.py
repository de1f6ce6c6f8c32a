"""napari-cellboxify: instance masks of cells from a model that learned from bounding boxes."""

__version__ = "0.1.0"
