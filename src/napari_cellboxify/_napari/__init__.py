"""The napari skin: the only Qt code of the package. Everything here converts layers <-> core types."""
