"""The CellBoxify network: torchvision detection parts and the polygon head."""

from .detector import CellBoxify, build_model
from .polygon_head import PolygonHead, initial_contour

__all__ = ["CellBoxify", "PolygonHead", "build_model", "initial_contour"]
