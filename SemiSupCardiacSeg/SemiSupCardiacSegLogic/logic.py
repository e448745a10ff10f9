"""Qt-free Logic of the SemiSupCardiacSeg module: MRML nodes in, MRML nodes out.

The Logic only moves data between the MRML scene and SemiSupCardiacSegLib, which does all the
work (preprocessing, sliding-window MC-dropout inference, mapping back to the input grid). It
imports no Qt, so it runs inside Slicer, under ``Slicer --no-main-window`` and in plain Python with
the ``slicer-core`` package from PyPI (the tests use that: a real vtkMRMLScene, no mocks).

Geometry: a Slicer volume node holds voxels as a (K, J, I) array and an IJK-to-RAS matrix; the
library's Volume holds (I, J, K) and LPS geometry. ``volume_from_node`` / ``add_volume_node`` are
the only two places that convert, through ``Volume.from_ijk_to_ras`` / ``Volume.ijk_to_ras``.

Nothing the user made is modified: every call creates new nodes with unique names, and the
training-library export never overwrites a file (a second export of a case gets a new name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from SemiSupCardiacSegLib.volume import Volume

# Display colours (RGB 0..1), standard codes and Slicer terminology entries of the structures the
# shipped models segment: data in terminology.json, read by terminology.py (names kept importable here).
from .terminology import DEFAULT_COLOR, STRUCTURE_CODES, STRUCTURE_COLORS, terminology_entry  # noqa: F401

# Node IDs of Slicer's default colour tables read from its ColorFiles (vtkMRMLColorLogic names
# file-based tables 'vtkMRMLColorTableNodeFile' + file name).
HEATMAP_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileInferno.txt"
SDM_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"


@dataclass
class SegmentResult:
    """Nodes created by one ``segment`` call (all on the input volume's grid) and the report dict."""

    segmentation: object  # vtkMRMLSegmentationNode
    distance: object | None  # vtkMRMLScalarVolumeNode, float32 SDM in [-1, 1] (negative inside)
    uncertainty: object  # vtkMRMLScalarVolumeNode, float32 predictive entropy (nats)
    report: dict = field(default_factory=dict)


def _vtk():
    import vtk  # noqa: PLC0415  (imported lazily so the module file imports without VTK)

    return vtk


def _matrix_to_numpy(m) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _numpy_to_matrix(a: np.ndarray):
    m = _vtk().vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def volume_from_node(node) -> Volume:
    """A scalar/labelmap volume node -> library Volume (array (I, J, K), LPS geometry, mm).

    Raises ValueError naming the node when it has no image data or is not a 3D scalar volume.
    """
    from vtk.util import numpy_support  # noqa: PLC0415

    image = node.GetImageData() if node is not None else None
    if image is None:
        raise ValueError(f"volume node '{node.GetName() if node else None}' has no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"volume node '{node.GetName()}' has {image.GetNumberOfScalarComponents()} "
                         "components; a single-component (scalar) volume is needed")
    dims = image.GetDimensions()  # (I, J, K)
    kji = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    m = _vtk().vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return Volume.from_ijk_to_ras(np.ascontiguousarray(kji.transpose(2, 1, 0)), _matrix_to_numpy(m))


def _set_node_from_volume(node, volume: Volume) -> None:
    from vtk.util import numpy_support  # noqa: PLC0415

    vtk = _vtk()
    array = np.ascontiguousarray(volume.array.transpose(2, 1, 0))  # (K, J, I), I fastest in memory
    image = vtk.vtkImageData()
    image.SetDimensions(*volume.shape)
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    node.SetIJKToRASMatrix(_numpy_to_matrix(volume.ijk_to_ras()))
    node.SetAndObserveImageData(image)


class SemiSupCardiacSegLogic:
    """Segment a volume node with a SemiSupCardiacSegLib model, and export cases for training.

    scene: the vtkMRMLScene to work in (``slicer.mrmlScene`` inside Slicer).
    segmentations_logic: a vtkSlicerSegmentationsModuleLogic; inside Slicer the module's own,
    otherwise one is created on ``scene``.
    """

    def __init__(self, scene, segmentations_logic=None) -> None:
        if scene is None:
            raise ValueError("SemiSupCardiacSegLogic needs an MRML scene")
        self.scene = scene
        if segmentations_logic is None:
            segmentations_logic = self._default_segmentations_logic(scene)
        self.segmentations_logic = segmentations_logic
        self._model_cache: dict[str, tuple] = {}

    @staticmethod
    def _default_segmentations_logic(scene):
        import slicer  # noqa: PLC0415

        modules = getattr(slicer, "modules", None)
        if modules is not None and hasattr(modules, "segmentations"):
            return modules.segmentations.logic()
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(scene)
        return logic

    # ----------------------------------------------------------------------------- nodes <-> data
    def add_volume_node(self, volume: Volume, name: str, class_name: str = "vtkMRMLScalarVolumeNode"):
        """New volume node (unique name from ``name``) holding ``volume`` with its geometry."""
        node = self.scene.AddNewNodeByClass(class_name, self.scene.GenerateUniqueName(name))
        _set_node_from_volume(node, volume)
        node.CreateDefaultDisplayNodes()
        return node

    def add_segmentation_node(self, labels: Volume, reference_node, names: dict[int, str], name: str):
        """New segmentation node with one named, coloured segment per label value in ``names``."""
        vtk = _vtk()
        seg_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(name))
        seg_node.CreateDefaultDisplayNodes()
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        segmentation = seg_node.GetSegmentation()
        for value, structure in sorted(names.items()):
            segment_id = segmentation.AddEmptySegment(structure.replace(" ", "_"), structure,
                                                      STRUCTURE_COLORS.get(structure, DEFAULT_COLOR))
            entry = terminology_entry(structure)
            if entry is not None:
                segmentation.GetSegment(segment_id).SetTag("TerminologyEntry", entry)  # = SetTerminology (Slicer >= 5.6)
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            # Import one label value into its own segment so names follow the model's labels.
            single = self.add_volume_node(labels.with_array((labels.array == value).astype(np.uint8)),
                                          name + " tmp", "vtkMRMLLabelMapVolumeNode")
            try:
                if not self.segmentations_logic.ImportLabelmapToSegmentationNode(single, seg_node, ids):
                    raise RuntimeError(f"importing label {value} ({structure}) into the segmentation failed")
            finally:
                self.scene.RemoveNode(single)
        return seg_node

    def labels_from_segmentation(self, segmentation_node, reference_node) -> Volume:
        """Segmentation node -> uint8 label Volume on ``reference_node``'s grid (segment n -> n+1)."""
        vtk = _vtk()
        ids = vtk.vtkStringArray()
        segmentation_node.GetSegmentation().GetSegmentIDs(ids)
        if ids.GetNumberOfValues() == 0:
            raise ValueError(f"segmentation '{segmentation_node.GetName()}' has no segments")
        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", self.scene.GenerateUniqueName("export"))
        try:
            if not self.segmentations_logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap, reference_node):
                raise RuntimeError(f"exporting segmentation '{segmentation_node.GetName()}' to a labelmap failed")
            labels = volume_from_node(labelmap)
        finally:
            self.scene.RemoveNode(labelmap)
        return labels.with_array(labels.array.astype(np.uint8))

    # ---------------------------------------------------------------------------------- segment
    def load_model(self, model: str | None = None):
        """(network, metadata) for a shipped model name ('la') or a checkpoint path; cached."""
        from SemiSupCardiacSegLib.checkpoint import load_model  # noqa: PLC0415

        key = str(model)
        if key not in self._model_cache:
            self._model_cache[key] = load_model(model)
        return self._model_cache[key]

    def segment(self, input_node, model: str | None = None, mc_samples: int = 10, device: str = "auto",
                progress: Callable[[float], None] | None = None, tta: bool = True, roi_node=None) -> SegmentResult:
        """Segment ``input_node``; returns new segmentation, SDM and uncertainty nodes on its grid.

        model: shipped model name or checkpoint path (None: the shipped LA model).
        mc_samples: Monte-Carlo dropout passes (>= 1; 1 gives a deterministic pass, entropy only).
        progress: called with the fraction done in [0, 1].
        tta: use the model's flip test-time augmentation (when its checkpoint defines one).
        roi_node: a markups ROI: only the voxels inside its RAS bounding box are segmented; outside it
        the segmentation is empty, the SDM +1 and the uncertainty 0 (results stay on the full grid).
        """
        from SemiSupCardiacSegLib.inference import predict_with_model  # noqa: PLC0415
        from SemiSupCardiacSegLib.reporting import segmentation_report  # noqa: PLC0415

        if input_node is None:
            raise ValueError("no input volume selected")
        if int(mc_samples) < 1:
            raise ValueError(f"mc_samples must be >= 1, got {mc_samples}")
        volume = volume_from_node(input_node)
        volume = volume.with_array(volume.array.astype(np.float32))
        net, meta = self.load_model(model)
        box = None
        if roi_node is not None:
            bounds = [0.0] * 6
            roi_node.GetRASBounds(bounds)
            box = volume.ras_box(np.array(bounds[0::2]), np.array(bounds[1::2]))
            if box is None:
                raise ValueError(f"ROI '{roi_node.GetName()}' does not overlap volume '{input_node.GetName()}'")
        pred = predict_with_model(net, meta, volume.crop(box) if box else volume,
                                  mc_samples=int(mc_samples), tta=tta, device=device, progress=progress)
        if box is not None:
            pred = pred.uncrop(volume, box, volume.voxels_in_ras_box(box, np.array(bounds[0::2]), np.array(bounds[1::2])))
        names = {int(k): v for k, v in meta["labels"].items()}
        distance = pred.labels.with_array(pred.foreground_sdm()) if pred.sdm is not None else None
        return self._add_result_nodes(input_node, pred.labels, names, distance, pred.entropy,
                                      segmentation_report(pred, meta["labels"], meta))

    def _add_result_nodes(self, input_node, labels: Volume, names: dict[int, str], distance: Volume | None,
                          uncertainty: Volume, report: dict) -> SegmentResult:
        """New segmentation, distance and uncertainty nodes named after ``input_node``, coloured."""
        base = input_node.GetName()
        seg_node = self.add_segmentation_node(labels, input_node, names, f"{base} segmentation")
        distance_node = self.add_volume_node(distance, f"{base} distance") if distance is not None else None
        uncertainty_node = self.add_volume_node(uncertainty, f"{base} uncertainty")
        self._set_color(uncertainty_node, HEATMAP_COLOR_NODE_ID)
        if distance_node is not None:
            self._set_color(distance_node, SDM_COLOR_NODE_ID, window_center=0.0)
        return SegmentResult(segmentation=seg_node, distance=distance_node, uncertainty=uncertainty_node, report=report)

    def import_outputs(self, input_node, out_dir: str | Path) -> SegmentResult:
        """Load what ``python -m SemiSupCardiacSegLib segment`` wrote into ``out_dir`` as new nodes
        (compact uint8 maps are decoded to float32).

        Segment names and label values come from its report.json; all files must be on the input
        node's grid (the command guarantees it), else ValueError names the file.
        """
        import json  # noqa: PLC0415

        from SemiSupCardiacSegLib.io import read_label  # noqa: PLC0415
        from SemiSupCardiacSegLib.reporting import read_output_map  # noqa: PLC0415

        out = Path(out_dir)
        report = json.loads((out / "report.json").read_text())
        grid = volume_from_node(input_node)
        loaded = {}
        for name in ("segmentation", "distance", "uncertainty"):
            path = out / f"{name}.nrrd"
            if not path.is_file():
                if name == "distance":
                    continue
                raise ValueError(f"{path} is missing")
            vol = read_label(path) if name == "segmentation" else read_output_map(out, path.name, report)
            if not vol.same_grid(grid):
                raise ValueError(f"{path.name} is not on the grid of volume '{input_node.GetName()}'")
            loaded[name] = vol
        names = {int(v["label"]): k for k, v in report["structures"].items()}
        return self._add_result_nodes(input_node, loaded["segmentation"], names, loaded.get("distance"),
                                      loaded["uncertainty"], report)

    def _set_color(self, node, color_node_id: str, window_center: float | None = None) -> None:
        """Assign a colour table by its node ID. Slicer's Colors module creates its default tables at
        startup; a headless slicer-core scene has none of the file-based ones, but the reference is
        kept and resolves when a saved scene is opened in Slicer."""
        display = node.GetDisplayNode()
        if display is None:
            return
        display.SetAndObserveColorNodeID(color_node_id)
        if window_center is not None:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(2.0, window_center)

    # --------------------------------------------------------------------------- review helpers
    def uncertain_regions(self, uncertainty_node, num_classes: int = 2, threshold: float | None = None,
                          min_volume_mm3: float = 20.0) -> list:
        """Regions of the uncertainty node above ``threshold`` (nats), most uncertain first.

        Each item is a ``SemiSupCardiacSegLib.uncertain_regions.UncertainRegion``; its ``centre_ras``
        is a voxel centre inside the region, in the scene's RAS mm (see ``jump_slices_to``).
        """
        from SemiSupCardiacSegLib.uncertain_regions import rank_uncertain_regions  # noqa: PLC0415

        return rank_uncertain_regions(volume_from_node(uncertainty_node), num_classes, threshold, min_volume_mm3)

    def jump_slices_to(self, ras: tuple[float, float, float]) -> int:
        """Centre every slice view of the scene on ``ras`` (mm); returns how many views moved."""
        moved = 0
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            node = self.scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
            node.JumpSliceByCentering(*[float(v) for v in ras])
            moved += 1
        return moved

    def show_overlays(self, input_node, result: SegmentResult, opacity: float = 0.4) -> int:
        """Input as background and the uncertainty heatmap as foreground in the Red/Yellow/Green views.

        Works on the slice composite nodes (creating the three singletons in a scene without views,
        e.g. a headless scene about to be saved); returns how many views were set.
        """
        views = []
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            views.append(self.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode"))
        if not views:
            for name in ("Red", "Yellow", "Green"):
                node = self.scene.CreateNodeByClass("vtkMRMLSliceCompositeNode")
                node.SetLayoutName(name)
                node.SetSingletonTag(name)
                views.append(self.scene.AddNode(node))
        for view in views:
            view.SetBackgroundVolumeID(input_node.GetID())
            view.SetForegroundVolumeID(result.uncertainty.GetID())
        self.set_heatmap_opacity(opacity)
        return len(views)

    def set_heatmap_opacity(self, opacity: float) -> int:
        """Foreground (heatmap) opacity in [0, 1] of every slice view; returns how many views changed."""
        opacity = float(opacity)
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"heatmap opacity must be within [0, 1], got {opacity}")
        n = self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")
        for i in range(n):
            self.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").SetForegroundOpacity(opacity)
        return n

    def save_scene(self, folder: str | Path, nodes: list) -> Path:
        """Write ``nodes`` (volumes as .nrrd, segmentations as .seg.nrrd) and ``scene.mrml`` into ``folder``.

        The folder must not hold a scene already (nothing is overwritten). Returns the .mrml path,
        which Slicer opens with the same nodes, colours and views.
        """
        folder = Path(folder)
        scene_file = folder / "scene.mrml"
        if scene_file.exists():
            raise FileExistsError(f"refusing to overwrite existing scene: {scene_file}")
        folder.mkdir(parents=True, exist_ok=True)
        for node in nodes:
            node.AddDefaultStorageNode()
            storage = node.GetStorageNode()
            stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in node.GetName())
            path = folder / f"{stem}.{storage.GetDefaultWriteFileExtension()}"
            if path.exists():
                raise FileExistsError(f"refusing to overwrite existing file: {path}")
            storage.SetFileName(str(path))
            if not storage.WriteData(node):
                raise RuntimeError(f"writing {node.GetName()} to {path} failed")
        self.scene.SetRootDirectory(str(folder))
        self.scene.SetURL(str(scene_file))
        if not self.scene.Commit():
            raise RuntimeError(f"writing the scene file {scene_file} failed")
        return scene_file

    # -------------------------------------------------------------------------- training library
    def add_to_library(self, volume_node, library_dir: str | Path, segmentation_node=None) -> tuple[Path, Path | None]:
        """Write the image (and its segmentation as NAME_label.nrrd) into ``library_dir``.

        The files are what ``Training/train.py --data library_dir`` reads: labeled where a label file
        sits beside the image. Never overwrites: when NAME is taken, NAME_2, NAME_3, ... are used.
        Returns (image path, label path or None).
        """
        from SemiSupCardiacSegLib.io import write_volume  # noqa: PLC0415

        library = Path(library_dir)
        library.mkdir(parents=True, exist_ok=True)
        image = volume_from_node(volume_node)
        labels = self.labels_from_segmentation(segmentation_node, volume_node) if segmentation_node else None
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in volume_node.GetName()) or "case"
        for n in range(1, 10000):
            name = stem if n == 1 else f"{stem}_{n}"
            image_path, label_path = library / f"{name}.nrrd", library / f"{name}_label.nrrd"
            if image_path.exists() or label_path.exists():
                continue
            try:
                write_volume(image, image_path)
            except FileExistsError:
                continue  # another writer took the name between the check and the write
            if labels is not None:
                write_volume(labels, label_path)
            append_to_manifest(library, {"name": name, "image": image_path.name,
                                         "label": label_path.name if labels is not None else None,
                                         "labeled": labels is not None, "source_node": volume_node.GetName(),
                                         "shape": list(image.shape), "spacing_mm": [float(v) for v in image.spacing]})
            return image_path, (label_path if labels is not None else None)
        raise RuntimeError(f"no free case name for '{stem}' in {library}")

    # ----------------------------------------------------------------------------- results tables
    def _table(self, name: str, columns: list[str], rows: list[list[str]]):
        """A new vtkMRMLTableNode with string columns ``columns`` and ``rows``."""
        table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", self.scene.GenerateUniqueName(name))
        for c in columns:
            table.AddColumn().SetName(c)
        for row in rows:
            r = table.AddEmptyRow()
            for j, value in enumerate(row):
                table.SetCellText(r, j, value)
        return table

    def results_table(self, result: SegmentResult):
        """Table node of one segmentation: structure, volume (mL), mean boundary uncertainty (nats),
        the quality flag ('doubtful' when the checkpoint's uncertainty threshold says so)."""
        rows = []
        for name, st in result.report["structures"].items():
            mi = st.get("mean_boundary_mutual_info")
            rows.append([name, f"{st['volume_ml']:.2f}", "-" if st.get("mean_boundary_entropy") is None else f"{st['mean_boundary_entropy']:.3f}",
                         "-" if mi is None else f"{mi:.3f}", "doubtful" if st.get("doubtful") else ("ok" if st.get("doubtful") is False else "-")])
        return self._table(f"{result.segmentation.GetName()} results",
                           ["structure", "volume (mL)", "boundary entropy (nats)", "boundary MI (nats)", "quality"], rows)

    def cardiac_table(self, ed: SegmentResult, es: SegmentResult, reference_ed_node, spacing=None):
        """Table node of LV/RV EDV, ESV, EF and myocardial mass from an ED and an ES segmentation of a
        cine model (labels 1 RV, 2 myocardium, 3 LV) on the same grid (``reference_ed_node``)."""
        from SemiSupCardiacSegLib.cardiac import cardiac_indices  # noqa: PLC0415

        ed_labels = self.labels_from_segmentation(ed.segmentation, reference_ed_node)
        es_labels = self.labels_from_segmentation(es.segmentation, reference_ed_node)
        values = cardiac_indices(ed_labels.array, es_labels.array, spacing or ed_labels.spacing)
        units = {"ml": "mL", "percent": "%", "g": "g"}
        rows = [[k.rsplit("_", 1)[0], f"{v:.1f}", units[k.rsplit("_", 1)[1]]] for k, v in values.items()
                if isinstance(v, float) and k.rsplit("_", 1)[1] in units]
        return self._table(f"{reference_ed_node.GetName()} cardiac indices", ["index", "value", "unit"], rows), values

    # ----------------------------------------------------------------------------- background segmentation
    def start_segment_job(self, input_node, out_dir: str | Path, model: str | None = None, mc_samples: int = 10,
                          device: str = "auto", python_executable: str | None = None):
        """Segment ``input_node`` in a child process (the UI stays responsive; ``cancel()`` stops it):
        the volume is written to ``out_dir/input.nrrd`` and ``python -m SemiSupCardiacSegLib segment``
        runs on it (inside Slicer pass its PythonSlicer as ``python_executable``). When the job ends
        with 0, ``import_outputs(input_node, out_dir)`` loads the results. Returns a ``jobs.SegmentJob``."""
        from SemiSupCardiacSegLib.io import write_volume  # noqa: PLC0415
        from SemiSupCardiacSegLib.jobs import SegmentJob  # noqa: PLC0415

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = write_volume(volume_from_node(input_node), out / "input.nrrd", overwrite=True)
        return SegmentJob(path, out / "result", model=model, mc_samples=mc_samples, device=device, python=python_executable)

    # ----------------------------------------------------------------------------- fine-tuning
    def fine_tune(self, library_dir: str | Path, out_dir: str | Path, model: str | None = None, iterations: int = 1000,
                  slicer_executable: str | None = None, python_executable: str | None = None, threads: int | None = None):
        """Start Training/train.py in a child process: ``model``'s weights, method and network, on the
        library's labeled + unlabeled cases. Inside Slicer pass ``slicer_executable``
        (``slicer.app.applicationFilePath()``) so the job runs headless in Slicer's Python.
        Returns a ``jobs.FineTuneJob`` (``progress()``, ``poll()``, ``cancel()``); the new
        checkpoint is ``out_dir/model.pt``, loadable as a model path."""
        from SemiSupCardiacSegLib.checkpoint import resolve_model_path  # noqa: PLC0415
        from SemiSupCardiacSegLib.jobs import start_fine_tune  # noqa: PLC0415

        _, meta = self.load_model(model)
        return start_fine_tune(meta, resolve_model_path(model), library_dir, out_dir, iterations,
                               python=python_executable, slicer=slicer_executable, threads=threads)

    def compare_models(self, old_model: str | None, new_model: str, mc_samples: int = 1, device: str = "auto"):
        """Validation metrics of the model before and after fine-tuning, on the cases the new model held
        out (its checkpoint's ``training_data.validation_cases`` in its training library).

        Returns (table node: structure, metric, old, new; the dict of both evaluations), or
        (None, None) when the fine-tune held out no case (fewer than three labeled cases in the library).
        """
        from SemiSupCardiacSegLib.data import find_cases  # noqa: PLC0415
        from SemiSupCardiacSegLib.evaluation import evaluate_cases  # noqa: PLC0415

        _, new_meta = self.load_model(new_model)
        held_out = set(new_meta.get("training_data", {}).get("validation_cases") or [])
        source = new_meta.get("training_data", {}).get("source")
        sources = [source] if isinstance(source, str) else list(source or [])
        if not held_out or not sources:
            return None, None
        cases = [c for src in sources for c in find_cases(src) if c.name in held_out and c.label is not None]
        if not cases:
            raise ValueError(f"the held-out cases {sorted(held_out)} are no longer in {source}")
        results = {}
        for which, model in (("old", old_model), ("new", new_model)):
            net, meta = self.load_model(model)
            results[which] = evaluate_cases(net, meta, cases, mc_samples=mc_samples, device=device)
        rows = []
        for structure, summary in results["new"]["mean"].items():
            for metric in ("dice", "hd95"):
                old = results["old"]["mean"].get(structure, {}).get(metric, {}).get("mean")
                rows.append([structure, metric, "-" if old is None else f"{old:.3f}", f"{summary[metric]['mean']:.3f}"])
        table = self._table(f"fine-tune validation ({len(cases)} held-out case{'s' if len(cases) > 1 else ''})",
                            ["structure", "metric", "before", "after"], rows)
        return table, results

    @staticmethod
    def model_choices(registered: list[str] = ()) -> list[str]:
        """The model list: shipped model names present in ``models/``, then the ``registered``
        checkpoint paths (e.g. fine-tuned models) that still exist, without duplicates."""
        from SemiSupCardiacSegLib.shipped import MODELS_DIR, SHIPPED_MODELS  # noqa: PLC0415

        names = [n for n, f in SHIPPED_MODELS.items() if (MODELS_DIR / f).is_file()]
        for path in registered:
            if path and path not in names and Path(path).is_file():
                names.append(path)
        return names

    def segment_button_text(self, model: str | None = None) -> str:
        """What the Segment button says for ``model``: 'Segment LA', or the structures of another model."""
        try:
            _, meta = self.load_model(model)
        except Exception:  # unreadable model: the segment call itself reports the problem
            return "Segment"
        names = list(meta["labels"].values())
        if names == ["left atrium"]:
            return "Segment LA"
        return "Segment " + ", ".join(n.replace("right ventricle", "RV").replace("left ventricle", "LV") for n in names)


def append_to_manifest(library: Path, entry: dict) -> Path:
    """Add ``entry`` (plus the time) to ``library/manifest.json``, atomically (the list of cases the
    library holds, in the order they were added)."""
    import json  # noqa: PLC0415
    from datetime import datetime, timezone  # noqa: PLC0415

    from SemiSupCardiacSegLib.atomic import atomic_write_text  # noqa: PLC0415

    path = Path(library) / "manifest.json"
    cases = json.loads(path.read_text())["cases"] if path.exists() else []
    cases.append({**entry, "added": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    atomic_write_text(path, json.dumps({"cases": cases}, indent=2))
    return path
