"""The CellBoxify dock widget: draw boxes, segment, fine-tune in the background, correct, export.

A thin skin: it converts layers <-> core types (2-D planes, boxes, label images) and calls the core
(``Predictor``, ``Trainer``, ``export``). Everything slow runs in napari thread workers — training in a child
process they watch — and the widget only reacts to their signals, so the viewer stays responsive. Errors
become napari notifications, never tracebacks.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtGui import QPainter, QPen
from qtpy.QtWidgets import QFileDialog, QGroupBox, QVBoxLayout, QWidget

from ..checkpoint import load_model
from ..config import TTA_MODES
from ..data.annotated_area import area_fraction
from ..export import plane_name, write_label_outputs, write_training_project
from ..flip_agreement import choose_shipped, close_call
from ..io_utils import check_folder
from ..predict import Predictor
from ..train_process import fine_tune_in_subprocess
from ..weights import DEFAULT, SHIPPED, WeightsError, default_weights_path, shipped_weights_path
from ..zoom_fit import fit_zoom
from . import layers
from .io import BOX_STYLE

# The imports above are done here, on the main thread, on purpose: a first import inside a worker thread
# (loading extension modules) holds the GIL and freezes napari's event loop meanwhile (measured: 0.5 s).

MASKS_LAYER = "CellBoxify masks"
BOXES_LAYER = "CellBoxify boxes"


def guarded(method):
    """Run a button handler; any error becomes a napari notification naming the problem."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self)
        except Exception as exc:  # the GUI must never show a traceback
            show_error(f"CellBoxify: {exc}")
            return None

    return wrapper


class LossPlot(QWidget):
    """A minimal live loss curve (no plotting dependency)."""

    def __init__(self):
        super().__init__()
        self.values: list[float] = []
        self.setMinimumHeight(60)

    def add(self, value: float) -> None:
        self.values.append(value)
        self.update()

    def clear(self) -> None:
        self.values = []
        self.update()

    def paintEvent(self, event):  # noqa: N802 (Qt name)
        if len(self.values) < 2:
            return
        painter = QPainter(self)
        painter.setPen(QPen(Qt.green, 1.5))
        v = np.asarray(self.values)
        lo, hi = float(v.min()), float(v.max())
        span = (hi - lo) or 1.0
        w, h = self.width() - 4, self.height() - 4
        pts = [(2 + w * i / (len(v) - 1), 2 + h * (1 - (val - lo) / span)) for i, val in enumerate(v)]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            painter.drawLine(int(x0), int(y0), int(x1), int(y1))
        painter.end()


def _group(title: str, *widgets) -> QGroupBox:
    """A titled frame around a magicgui form (magicgui has no titled container)."""
    box = QGroupBox(title)
    QVBoxLayout(box).addWidget(Container(widgets=widgets).native)
    return box


def _row(*widgets, label: str = "") -> Container:
    """Widgets side by side, under one ``label`` in the form around them."""
    return Container(widgets=widgets, layout="horizontal", labels=False, label=label)


class CellBoxifyWidget(QWidget):
    """The panel: forms made with magicgui, the live loss curve in Qt."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.predictor = None
        self.weights_path: Path | None = None
        self.cancel_event: threading.Event | None = None
        self.train_worker = None
        self.busy_worker = None
        self._build_ui()
        for event in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, event).connect(self._refresh_layers)
        self._refresh_layers()
        self._try_default_weights()

    # ---- UI ----------------------------------------------------------------------------------------------
    def _layers_of(self, kind):
        """Choices for a layer chooser: the viewer's layers of ``kind``, by name."""
        return lambda _widget: [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, kind)]

    def _build_ui(self) -> None:
        self.image_combo = ComboBox(label="Image", choices=self._layers_of(Image))
        self.boxes_combo = ComboBox(choices=self._layers_of(Shapes))
        self.labels_combo = ComboBox(label="Masks", choices=self._layers_of(Labels))
        new_boxes = PushButton(text="New", tooltip="A new boxes layer over the image, ready to draw rectangles")
        new_boxes.clicked.connect(lambda: guarded(CellBoxifyWidget.new_boxes_layer)(self))
        # the shipped weights by what they segment; a file of one's own (a fine-tune) through Load weights…
        self.model_combo = ComboBox(label="Model", choices=[(f"{name}: {what}", name) for name, (_, what) in
                                                            SHIPPED.items()],
                                    tooltip="Shipped weights: cells for phase-contrast cells (LIVECell-like), nuclei "
                                            "for nuclei in fluorescence, neurons for phase-contrast neuronal "
                                            "cultures. Each comes with its own zoom.")
        self.model_combo.changed.connect(lambda _name: guarded(CellBoxifyWidget._load_chosen_model)(self))
        self.choose_model_button = PushButton(
            text="Choose for this image",
            tooltip="Load the shipped model that finds the same cells in this slice and in its mirror image (no "
                    "boxes needed): the one that knows such cells. Three models, two passes each, on at most a "
                    "1024-px square of the slice: 11-13 s for a 704x520 image on 2 CPU cores.")
        self.choose_model_button.clicked.connect(self.choose_model)
        self.weights_label = Label(value="no model loaded")
        load = PushButton(text="Load weights…")
        load.clicked.connect(self._choose_weights)
        layers_form = Container(widgets=[self.image_combo, _row(self.boxes_combo, new_boxes, label="Boxes"),
                                         self.labels_combo, self.model_combo, self.choose_model_button,
                                         self.weights_label, load])

        self.segment_boxes_button = PushButton(text="Segment my boxes")
        self.segment_boxes_button.clicked.connect(self.segment_my_boxes)
        self.segment_image_button = PushButton(text="Segment image")
        self.segment_image_button.clicked.connect(self.segment_image)
        self.score_spin = FloatSpinBox(label="Score threshold", min=0.0, max=1.0, step=0.05, value=0.5)
        self.max_dets_spin = SpinBox(label="Max detections", min=1, max=5000, value=2000)
        # Cellpose's "diameter" in our terms: the network learned cells at the training data's pixel size.
        self.zoom_spin = FloatSpinBox(
            label="Zoom", min=0.1, max=8.0, step=0.25, value=1.0,
            tooltip="How much the network enlarges your image. The default weights see LIVECell (10x phase "
                    "contrast) at 1.5: halve it if your cells are twice as large in pixels, double it if half, or let "
                    "Fit zoom to my boxes choose. Fine-tuning trains at this zoom and keeps it with the weights.")
        self.fit_zoom_button = PushButton(
            text="Fit zoom to my boxes",
            tooltip="Detect cells at six zooms around this one and keep the zoom whose boxes match yours best (box "
                    "every cell inside the rectangle around your boxes). About 6 s per fully boxed 704x520 image on "
                    "2 CPU cores, 2 s on a GPU.")
        self.fit_zoom_button.clicked.connect(self.fit_zoom)
        self.tta_combo = ComboBox(
            label="Test-time augm.", choices=TTA_MODES,
            tooltip="Test-time augmentation: segment the 8 flips/turns of the image (and, with scales, two zooms) "
                    "and merge the answers. Slower (flips ~8x, flips+scales ~15x on a CPU; 1.6x and 2.5x on a GPU), "
                    "more accurate: +1.9 / +2.4 segm AP on LIVECell val with the cells weights (34.9 -> 36.8 / "
                    "37.3); flips gained on each of the 15 livecell-mini images, scales add little beyond it.")
        self.all_planes_check = CheckBox(text="all slices of a stack")

        self.project_edit = FileEdit(label="Project folder", mode="d", value=Path.home() / "cellboxify-project")
        self.minutes_spin = FloatSpinBox(label="Time (min)", min=0.1, max=1440.0, step=0.5, value=5.0,
                                         tooltip="Time for the whole fine-tune, checks included (a GPU trains "
                                                 "more in it)")
        # Measured in benchmarks/bench_adapt.py (RESULTS.md, "Fine-tuning on a few boxes").
        self.train_button = PushButton(
            text="Fine-tune",
            tooltip="Adapt the model to your cells from your boxes, in the background: a fifth of the boxes is kept "
                    "aside to check, the shipped file (cells, nuclei or neurons) and the zoom that find your other "
                    "boxes best are chosen, the detector trains for the time given, and the new weights are used "
                    "only if they find your kept-aside cells better. Box every cell inside the rectangle around "
                    "your boxes.")
        self.train_button.clicked.connect(self.fine_tune)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.cancel_button.clicked.connect(self.cancel_training)
        self.loss_label = Label(value="")
        for label in (self.weights_label, self.loss_label):  # a fine-tune's summary is a sentence: wrap, not widen
            label.native.setWordWrap(True)
        self.loss_plot = LossPlot()  # Qt: magicgui has no live plot
        tune = _group("Fine-tune on my boxes", self.project_edit, self.minutes_spin,
                      _row(self.train_button, self.cancel_button), self.loss_label)
        tune.layout().addWidget(self.loss_plot)

        fix = PushButton(text="Predictions → boxes",
                         tooltip="Turn the masks of this slice into editable boxes, to correct them and fine-tune "
                                 "again")
        fix.clicked.connect(self.predictions_to_boxes)

        self.export_edit = FileEdit(label="Folder", mode="d", value=Path.home() / "cellboxify-export")
        self.export_tiff, self.export_coco, self.export_csv = (CheckBox(text=t, value=True)
                                                               for t in ("label TIFF", "COCO", "CSV"))
        self.export_button = PushButton(text="Export")
        self.export_button.clicked.connect(self.export)

        layout = QVBoxLayout(self)
        layout.addWidget(layers_form.native)
        layout.addWidget(_group("Segment", self.segment_boxes_button, self.segment_image_button, self.score_spin,
                                self.max_dets_spin, self.zoom_spin, self.fit_zoom_button, self.tta_combo,
                                self.all_planes_check))
        layout.addWidget(tune)
        layout.addWidget(fix.native)
        layout.addWidget(_group("Export masks", self.export_edit,
                                _row(self.export_tiff, self.export_coco, self.export_csv), self.export_button))
        layout.addStretch(1)

    def _refresh_layers(self, event=None) -> None:
        for combo in (self.image_combo, self.boxes_combo, self.labels_combo):
            combo.reset_choices()  # keeps the chosen layer while it is still there

    # ---- model -------------------------------------------------------------------------------------------
    def _try_default_weights(self) -> None:
        try:
            self.load_weights(default_weights_path())
        except WeightsError as exc:
            self.weights_label.value = f"no default weights ({exc.__class__.__name__}); load or fine-tune one"
        except Exception as exc:  # a broken default must not stop the panel from opening
            show_warning(f"CellBoxify: default weights not loaded: {exc}")

    def _load_chosen_model(self) -> None:
        self.load_weights(shipped_weights_path(self.model_combo.value))

    def _choose_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Weights", "", "PyTorch weights (*.pt *.pth)")
        if path:
            guarded(lambda self: self.load_weights(Path(path)))(self)

    def load_weights(self, path: Path) -> None:
        model, _ = load_model(path, "cpu")
        self.use_model(model, Path(path))

    def use_model(self, model, path: Path) -> None:
        self.predictor = Predictor(model, "auto")
        self.zoom_spin.value = self.predictor.image_scale  # the zoom these weights were trained (or set) at
        self.tta_combo.value = self.predictor.tta
        self.weights_path = path
        self.weights_label.value = f"{path.name} ({model.config.model.backbone}, {self.predictor.device.type})"

    def _require_model(self):
        if self.predictor is None:
            raise RuntimeError("no model loaded: load weights or fine-tune on your boxes first")
        # The panel's settings as they are at the click, in a predictor of their own: a worker keeps them while
        # the user changes the panel (the model is shared, never changed).
        return self.predictor.with_settings(image_scale=self.zoom_spin.value, tta=self.tta_combo.value)

    # ---- layers <-> core ---------------------------------------------------------------------------------
    def _layer(self, combo: ComboBox, what: str):
        layer = combo.value  # the choices hold only layers of the right kind
        if layer is None or layer not in self.viewer.layers:
            raise RuntimeError(f"choose {what} first")
        return layer

    def image_layer(self) -> Image:
        return self._layer(self.image_combo, "an image layer")

    def spatial_shape(self, layer: Image) -> tuple[int, ...]:
        return layers.spatial_shape(layer)

    def current_plane(self, layer: Image) -> tuple:
        return layers.current_plane(layer, self.viewer.dims.current_step, self.viewer.dims.ndim)

    def plane_image(self, layer: Image, plane: tuple, lazy: bool = False) -> np.ndarray:
        return layers.plane_image(layer, plane, lazy)

    def new_boxes_layer(self) -> Shapes:
        image = self.image_layer() if self.image_combo.value is not None else None
        ndim = len(self.spatial_shape(image)) if image is not None else 2
        # In the image's units and place, so that boxes drawn over a calibrated image (µm) sit on its pixels.
        where = {"scale": image.scale, "translate": image.translate} if image is not None else {}
        layer = self.viewer.add_shapes(name=BOXES_LAYER, ndim=ndim, shape_type="rectangle",
                                       features={"cell_id": np.zeros(0, dtype=np.int64)}, **where, **BOX_STYLE)
        layer.feature_defaults = {"cell_id": 0}
        layer.mode = "add_rectangle"
        self.boxes_combo.value = layer
        return layer

    def boxes_layer(self, create: bool = False) -> Shapes:
        if create and self.boxes_combo.value is None:
            return self.new_boxes_layer()
        return self._layer(self.boxes_combo, "a boxes (Shapes) layer")

    def read_boxes(self, image: Image, layer: Shapes):
        """The boxes of ``layer`` on ``image``'s pixels (``layers.read_boxes``), its notices shown."""
        try:
            converted = layers.read_boxes(image, layer, self.current_plane(image))
        except ValueError as exc:  # a rotated or sheared layer, named
            raise RuntimeError(str(exc)) from None
        if converted.notices:
            show_info("CellBoxify: " + "; ".join(converted.notices))
        return converted

    def masks_layer(self, image: Image) -> Labels:
        shape = self.spatial_shape(image)
        if MASKS_LAYER in self.viewer.layers:
            layer = self.viewer.layers[MASKS_LAYER]
            if isinstance(layer, Labels) and tuple(layer.data.shape) == shape:
                return layer
            self.viewer.layers.remove(MASKS_LAYER)
        layer = self.viewer.add_labels(np.zeros(shape, dtype=np.uint32), name=MASKS_LAYER,
                                       scale=image.scale[-len(shape):], translate=image.translate[-len(shape):])
        layer.metadata["polygons"] = {}
        self.labels_combo.value = layer
        return layer

    def show_prediction(self, image: Image, plane: tuple, pred) -> None:
        layer = self.masks_layer(image)
        labels = pred.labels()
        if plane:
            layer.data[plane] = labels
        else:
            layer.data[...] = labels
        layer.metadata.setdefault("polygons", {})[plane] = dict(zip(pred.label_ids().tolist(), pred.polygons_xy))
        layer.refresh()

    # ---- actions -----------------------------------------------------------------------------------------
    @guarded
    def segment_my_boxes(self) -> None:
        predictor = self._require_model()
        image = self.image_layer()
        layer = self.boxes_layer()
        converted = self.read_boxes(image, layer)
        if not converted.boxes:
            show_warning("CellBoxify: no usable boxes to segment (draw rectangles in the boxes layer)")
            return
        ids = layers.stable_ids(layer)
        planes = sorted(converted.boxes)
        count = sum(len(b) for b in converted.boxes.values())

        def work():  # in a worker: a second or two per plane on a CPU, 8x that with test-time augmentation
            for plane in planes:
                pixels = self.plane_image(image, plane, lazy=True)
                yield plane, predictor.segment_boxes(pixels, converted.boxes[plane],
                                                     ids=ids[converted.shape_index[plane]])
            return count

        worker = create_worker(work, _progress={"total": len(planes), "desc": "CellBoxify: outlining your boxes"},
                               _ignore_errors=True)  # errors become notifications (_start_busy), not tracebacks
        worker.yielded.connect(lambda item: self._show_segmented(image, item, worker))
        worker.returned.connect(lambda n: show_info(f"CellBoxify: segmented {n} box(es)"))
        self._start_busy(worker, "segmenting your boxes")

    @guarded
    def segment_image(self) -> None:
        predictor = self._require_model()
        image = self.image_layer()
        shape = self.spatial_shape(image)
        if self.all_planes_check.value and len(shape) > 2:
            planes = [tuple(idx) for idx in np.ndindex(*shape[:-2])]
        else:
            planes = [self.current_plane(image)]
        threshold, max_dets = self.score_spin.value, self.max_dets_spin.value
        def work():
            for plane in planes:
                pixels = self.plane_image(image, plane, lazy=True)
                # large images in tiles, as predict does: memory follows the tile, not the image
                pred = predictor.segment(pixels, score_threshold=threshold, max_detections=max_dets)
                yield plane, pred

        worker = create_worker(work, _progress={"total": len(planes), "desc": "CellBoxify: segmenting"},
                               _ignore_errors=True)  # errors become notifications (_start_busy), not tracebacks
        worker.yielded.connect(lambda item: self._show_segmented(image, item, worker))
        self._start_busy(worker, "segmentation")

    def _show_segmented(self, image: Image, item, worker) -> None:
        """Show one plane's masks; if that fails (e.g. the layers changed meanwhile), say so and stop the run."""
        try:
            self.show_prediction(image, *item)
        except Exception as exc:
            worker.quit()
            show_error(f"CellBoxify: segmentation could not be shown: {exc}")

    @guarded
    def fit_zoom(self) -> None:
        predictor = self._require_model()
        image = self.image_layer()
        converted = self.read_boxes(image, self.boxes_layer())
        items = [(self.plane_image(image, plane), boxes) for plane, boxes in sorted(converted.boxes.items())]
        if not items:
            raise RuntimeError("draw boxes around a few cells first: the zoom is chosen to match them")

        def work():
            return fit_zoom(predictor, items)

        def done(fit) -> None:
            self.zoom_spin.value = fit.zoom
            show_info(f"CellBoxify: zoom {fit.zoom:.2f} (bbox AP against your boxes at each zoom: {fit.summary()})")

        worker = create_worker(work, _progress={"desc": "CellBoxify: fitting the zoom"}, _ignore_errors=True)
        worker.returned.connect(done)
        self._start_busy(worker, "fitting the zoom")

    @guarded
    def choose_model(self) -> None:
        image = self.image_layer()
        pixels = self.plane_image(image, self.current_plane(image), lazy=True)  # only a window of it is read

        def work():
            return choose_shipped([pixels])

        def done(result) -> None:
            name, agreement = result
            if self.model_combo.value == name:  # no change signal: load it here (a file of one's own may be in use)
                guarded(CellBoxifyWidget._load_chosen_model)(self)
            else:
                self.model_combo.value = name  # loads it
            runner_up = close_call(agreement, name)
            show_info(f"CellBoxify: model {name} (agreement with the mirror image: "
                      + ", ".join(f"{n} {a:.2f}" for n, a in agreement.items()) + ")"
                      + (f"; a close call: choose {runner_up} in Model if it is the one for these cells"
                         if runner_up else ""))

        worker = create_worker(work, _progress={"desc": "CellBoxify: choosing the model"}, _ignore_errors=True)
        worker.returned.connect(done)
        self._start_busy(worker, "choosing the model")

    def _start_busy(self, worker, what: str) -> None:
        """Run ``worker`` with the segment/fit/export buttons disabled; its failure becomes a notification."""
        worker.errored.connect(lambda exc: show_error(f"CellBoxify: {what} failed: {exc}"))
        worker.finished.connect(lambda: self._set_busy(False))
        self._set_busy(True)
        self.busy_worker = worker
        worker.start()

    def _set_busy(self, busy: bool) -> None:
        for button in (self.segment_boxes_button, self.segment_image_button, self.export_button,
                       self.fit_zoom_button, self.choose_model_button):
            button.enabled = not busy

    @guarded
    def fine_tune(self) -> None:
        if self.train_worker is not None:
            raise RuntimeError("training is already running")
        image = self.image_layer()
        layer = self.boxes_layer()
        converted = self.read_boxes(image, layer)
        n_boxes = sum(len(b) for b in converted.boxes.values())
        if n_boxes == 0:
            raise RuntimeError("draw some boxes around cells first: fine-tuning learns from them")
        project = check_folder(self.project_edit.value, "the project folder")
        if self.predictor is None or self.weights_path is None:
            raise RuntimeError("no weights loaded: fine-tuning adapts loaded weights to your cells; load weights first")
        items = [(plane_name(image.name, plane), self.plane_image(image, plane), boxes)
                 for plane, boxes in sorted(converted.boxes.items())]
        # From the default weights the fine-tune chooses the shipped file to start from (by the user's boxes and
        # each file's agreement with itself on the image, each at its own zoom). Another file, chosen by name or an
        # earlier fine-tune, is the user's choice: it starts there, at the panel's zoom, and "never worse" is
        # measured against it.
        default = self.weights_path.name == SHIPPED[DEFAULT][0]
        settings = dict(weights="auto" if default else self.weights_path, minutes=self.minutes_spin.value,
                        zoom=None if default else self.zoom_spin.value)
        self.cancel_event = threading.Event()
        cancel = self.cancel_event
        run_dir = project / "run"
        training = []  # the child's generator, for stop_on_quit

        def work():
            # Off the event loop: writing the project and loading the result happen in this worker thread, the
            # fine-tune itself in a child process (see train_process: a thread would share the GIL with Qt).
            ann_path, images_dir = write_training_project(project, items)
            training.append(fine_tune_in_subprocess(ann_path, images_dir, run_dir, cancel, **settings))
            report = yield from training[0]
            return report, load_model(run_dir / "model.pt", "cpu")[0], run_dir / "model.pt"

        self.loss_plot.clear()
        where = ""
        share = area_fraction([(boxes, im.shape[:2]) for _, im, boxes in items])
        if share < 0.995:  # say so: an unboxed cell inside that rectangle is still taught as background
            where = f" inside the rectangle around your boxes ({100 * share:.0f}% of the image; box every cell in it)"
        self.loss_label.value = (f"writing {n_boxes} boxes to {project}; fine-tuning for "
                                 f"{settings['minutes']:g} min{where}…")
        worker = create_worker(work, _progress={"desc": "CellBoxify: fine-tuning"},
                               _ignore_errors=True)  # its errored handler below is the notification
        worker.yielded.connect(self._on_step)
        worker.returned.connect(self._on_trained)
        worker.errored.connect(lambda exc: show_error(f"CellBoxify: fine-tuning failed: {exc}"))
        worker.finished.connect(self._on_train_finished)

        def stop_on_quit():
            # Quitting napari asks every worker to quit (closing one viewer asks the workers it lists as its
            # tasks), and a quit worker drops its generator without closing it: the training child would then be
            # killed at exit (or run on with no window), losing what it trained.
            # Closing the generator here, in the worker's thread that napari waits for, stops the child after its
            # current step and lets it measure and save, as Cancel does.
            if training:
                training[0].close()

        worker.aborted.connect(stop_on_quit, Qt.DirectConnection)
        self.train_worker = worker
        self.train_button.enabled = False
        self.cancel_button.enabled = True
        worker.start()

    def _on_step(self, info) -> None:
        self.loss_plot.add(info.loss)
        self.loss_label.value = f"step {info.step}  loss {info.loss:.3f}"

    def _on_trained(self, returned) -> None:
        report, model, path = returned
        self.use_model(model, path)
        self.loss_label.value = report.summary()
        show_info(f"CellBoxify: {report.summary()}")

    def _on_train_finished(self) -> None:
        self.train_worker = None
        self.train_button.enabled = True
        self.cancel_button.enabled = False

    def cancel_training(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
            self.loss_label.value += "  (cancelling: finishing the current step)"

    @guarded
    def predictions_to_boxes(self) -> None:
        image = self.image_layer()
        labels_layer = self._layer(self.labels_combo, "a masks (Labels) layer")
        plane = self.current_plane(image)
        if not np.asarray(labels_layer.data[plane] if plane else labels_layer.data).any():
            show_warning("CellBoxify: no masks on this slice to turn into boxes")
            return
        made = layers.masks_to_boxes(image, labels_layer, self.boxes_layer(create=True), plane)  # errors: guarded
        show_info(f"CellBoxify: {made} boxes from the masks of this slice; correct them, then fine-tune again")

    @guarded
    def export(self) -> None:
        image = self.image_layer()
        labels_layer = self._layer(self.labels_combo, "a masks (Labels) layer")
        formats = {kind for kind, box in (("csv", self.export_csv), ("tiff", self.export_tiff),
                                          ("coco", self.export_coco)) if box.value}
        if not formats:
            raise RuntimeError("choose at least one export format")
        folder = check_folder(self.export_edit.value, "the export folder")
        labels = np.array(labels_layer.data)  # a copy: painting while the files are written does not mix in
        if labels.shape != self.spatial_shape(image):  # measurements would mix another image's pixels
            raise RuntimeError(f"the masks layer '{labels_layer.name}' is {'x'.join(map(str, labels.shape))} and "
                               f"the image '{image.name}' is {'x'.join(map(str, self.spatial_shape(image)))}: "
                               "choose the masks of this image")
        planes = int(np.prod(labels.shape[:-2]))

        def work():  # in a worker: a long time-lapse takes seconds (0.2 s per plane of 300 cells on a CPU)
            written = yield from write_label_outputs(folder, image.name, labels,
                                                     lambda plane: self.plane_image(image, plane), formats,
                                                     layers.calibration(image))
            return len(written)

        worker = create_worker(work, _progress={"total": planes, "desc": "CellBoxify: exporting"},
                               _ignore_errors=True)  # errors become notifications (_start_busy), not tracebacks
        worker.returned.connect(lambda n: show_info(f"CellBoxify: wrote {n} file(s) to {folder}"))
        self._start_busy(worker, "export")
