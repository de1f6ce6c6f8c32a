"""The napari skin: the only Qt code of the package. Everything here converts layers <-> core types."""

import sys

# torch's optimisers import torch._dynamo on their first step, and torch._dynamo imports triton when it is
# installed (CUDA builds of torch ship it). triton bundles its own LLVM; once napari has a GL context on Mesa
# (llvmpipe, radeonsi), Mesa's LLVM is loaded and importing triton segfaults the whole viewer (seen with
# torch 2.14 + Mesa 22 under xvfb). This plugin never compiles kernels, so inside napari we make triton look
# absent unless something imported it already; torch then simply skips it.
sys.modules.setdefault("triton", None)
