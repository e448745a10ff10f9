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

from SemiSupCardiacSegLib.jobs import FINE_TUNE_ITERATIONS
from SemiSupCardiacSegLib.shipped import SHIPPED
from SemiSupCardiacSegLib.training_library import append_to_manifest, read_manifest, update_manifest_entry
from SemiSupCardiacSegLib.volume import Volume, mask_box

# Display colours (RGB 0..1), standard codes and Slicer terminology entries of the structures the
# shipped models segment: data in terminology.json, read by terminology.py (names kept importable here).
from .terminology import DEFAULT_COLOR, STRUCTURE_CODES, STRUCTURE_COLORS, terminology_entry  # noqa: F401

# Node IDs of Slicer's default colour tables read from its ColorFiles (vtkMRMLColorLogic names
# file-based tables 'vtkMRMLColorTableNodeFile' + file name).
HEATMAP_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileInferno.txt"
SDM_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
#: Node attribute of a segmentation made by this Logic: the ID of the volume node it segments.
SOURCE_VOLUME_ATTRIBUTE = "SemiSupCardiacSeg.SourceVolumeID"
#: Attribute of a volume node loaded from a training library (``load_library_case``): its image file.
LIBRARY_CASE_ATTRIBUTE = "SemiSupCardiacSeg.LibraryCase"
#: The library's subfolder ``suggest`` writes into (its ranking and the cases' segmentations).
SUGGESTIONS_FOLDER = "suggestions"


@dataclass
class SegmentResult:
    """One segmentation, tied to the volume node it was made from.

    The nodes were created by the Logic on the input's grid; ``labels`` and ``entropy`` are the
    arrays they were made from (as read from the segmenting process), kept so that uncertain
    regions and cardiac indices use them rather than exporting the nodes again. ``es`` is the
    end-systolic frame's result of a cine pair, ``cardiac`` its indices (mL, %, g)."""

    segmentation: object  # vtkMRMLSegmentationNode
    distance: object | None  # vtkMRMLScalarVolumeNode, float32 SDM in [-1, 1] (negative inside)
    uncertainty: object  # vtkMRMLScalarVolumeNode, float32 predictive entropy (nats)
    report: dict = field(default_factory=dict)
    input_node: object | None = None  # the vtkMRMLScalarVolumeNode segmented
    labels: Volume | None = None  # uint8 labels (I, J, K) on the input grid
    entropy: Volume | None = None  # float32 predictive entropy (nats) on the input grid
    es: "SegmentResult | None" = None
    cardiac: dict | None = None

    def num_classes(self) -> int:
        return len(self.report.get("structures", {})) + 1


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
        raise ValueError(
            f"volume node '{node.GetName()}' has {image.GetNumberOfScalarComponents()} "
            "components; a single-component (scalar) volume is needed"
        )
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


def node_to_world(node) -> np.ndarray:
    """4x4 matrix from ``node``'s own RAS frame to world RAS (identity when it is not transformed).

    Raises ValueError naming the node when a parent transform is not linear (harden it first)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise ValueError(
            f"'{node.GetName()}' is under the non-linear transform '{parent.GetName()}'; harden the transform first"
        )
    m = _vtk().vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(m)
    return _matrix_to_numpy(m)


def roi_mask(roi_node, volume_node) -> Volume:
    """uint8 Volume on ``volume_node``'s grid: 1 where the voxel centre lies inside the markups ROI.

    Both are taken in world coordinates, each with its own parent transform: voxel centres go
    through the volume's IJK-to-world matrix, then into the ROI's object frame (its axes and centre,
    ``GetObjectToWorldMatrix``), and are inside when within half its size (``GetSize``, mm along the
    ROI's axes) on every axis. So a rotated ROI, a transformed volume or both crop correctly.
    Raises ValueError when the ROI misses the volume."""
    vol = volume_from_node(volume_node)
    ijk_to_world = node_to_world(volume_node) @ vol.ijk_to_ras()
    world_to_object = np.linalg.inv(
        _matrix_to_numpy(roi_node.GetObjectToWorldMatrix())
    )  # ROI axes and centre, its transforms included
    half = np.asarray(roi_node.GetSize(), float) / 2.0
    to_object = world_to_object @ ijk_to_world
    inside = np.zeros(vol.shape, bool)
    i, j = np.meshgrid(np.arange(vol.shape[0], dtype=float), np.arange(vol.shape[1], dtype=float), indexing="ij")
    for k in range(vol.shape[2]):  # slice by slice: bounded memory on large fields of view
        p = to_object[:3, :3] @ np.stack([i.ravel(), j.ravel(), np.full(i.size, float(k))]) + to_object[:3, 3:4]
        inside[:, :, k] = np.all(np.abs(p) <= half[:, None] + 1e-6, axis=0).reshape(i.shape)
    if not inside.any():
        raise ValueError(f"ROI '{roi_node.GetName()}' does not overlap volume '{volume_node.GetName()}'")
    return vol.with_array(inside.astype(np.uint8))


def _training_library(library_dir: str | Path) -> Path:
    """``library_dir`` as a Path; ValueError where it is not a training library with cases."""
    library = Path(library_dir)
    if not library.is_dir() or not read_manifest(library):
        raise ValueError(f"{library} is not a training library with cases (no manifest.json entries)")
    return library


class SceneLogic:
    """Segment a volume node with a SemiSupCardiacSegLib model, and export cases for training.

    scene: the vtkMRMLScene to work in (``slicer.mrmlScene`` inside Slicer).
    segmentations_logic: a vtkSlicerSegmentationsModuleLogic; inside Slicer the module's own,
    otherwise one is created on ``scene``.
    """

    def __init__(self, scene, segmentations_logic=None) -> None:
        if scene is None:
            raise ValueError("SceneLogic needs an MRML scene")
        self.scene = scene
        if segmentations_logic is None:
            segmentations_logic = self._default_segmentations_logic(scene)
        self.segmentations_logic = segmentations_logic
        self._model_cache: dict[str, tuple] = {}
        self._metadata_cache: dict[tuple, dict] = {}

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
        """New segmentation node with one named, coloured segment per label value in ``names``.

        The labels are imported in one read: a temporary labelmap node whose colour table names
        and colours each value, so the segments come out named; a structure without voxels gets an
        empty segment in its place, so segment n is label n+1 as ``labels_from_segmentation``
        expects. Each segment carries its terminology entry (codes from Slicer's lists)."""
        seg_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(name))
        seg_node.CreateDefaultDisplayNodes()
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        seg_node.SetAttribute(SOURCE_VOLUME_ATTRIBUTE, reference_node.GetID())
        ordered = sorted(names.items())
        colors = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", self.scene.GenerateUniqueName(name + " colors"))
        colors.SetTypeToUser()
        colors.SetNumberOfColors(max(names) + 1)
        colors.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        for value, structure in ordered:
            colors.SetColor(value, structure, *STRUCTURE_COLORS.get(structure, DEFAULT_COLOR), 1.0)
        labelmap = self.add_volume_node(
            labels.with_array(labels.array.astype(np.uint8)), name + " labels", "vtkMRMLLabelMapVolumeNode"
        )
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
        try:
            if not self.segmentations_logic.ImportLabelmapToSegmentationNode(labelmap, seg_node):
                raise RuntimeError(f"importing the labels into segmentation '{seg_node.GetName()}' failed")
        finally:
            self.scene.RemoveNode(labelmap)
            self.scene.RemoveNode(colors)
        segmentation = seg_node.GetSegmentation()
        for index, (value, structure) in enumerate(ordered):
            segment_id = segmentation.GetSegmentIdBySegmentName(structure)
            if not segment_id:  # no voxel of this label: an empty segment keeps the label order
                segment_id = segmentation.AddEmptySegment("", structure, STRUCTURE_COLORS.get(structure, DEFAULT_COLOR))
            segmentation.SetSegmentIndex(segment_id, index)
            entry = terminology_entry(structure)
            if entry is not None:
                segmentation.GetSegment(segment_id).SetTag(
                    "TerminologyEntry", entry
                )  # = SetTerminology (Slicer >= 5.6)
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
            if not self.segmentations_logic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap, reference_node
            ):
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

    def segment(
        self,
        input_node,
        model: str | None = None,
        mc_samples: int = 10,
        device: str = "auto",
        progress: Callable[[float], None] | None = None,
        tta: bool = True,
        roi_node=None,
    ) -> SegmentResult:
        """Segment ``input_node``; returns new segmentation, SDM and uncertainty nodes on its grid.

        model: shipped model name or checkpoint path (None: the shipped LA model).
        mc_samples: Monte-Carlo dropout passes (>= 1; 1 gives a deterministic pass, entropy only).
        progress: called with the fraction done in [0, 1].
        tta: use the model's flip test-time augmentation (when its checkpoint defines one).
        roi_node: a markups ROI: only the voxels inside it are segmented (``roi_mask``: world
        coordinates, transforms and rotation included); outside it the segmentation is empty, the
        SDM +1 and the uncertainty 0 (results stay on the full grid).

        This runs in the calling process (scripts, tests); the Slicer Widget runs every inference
        in a child process instead (``start_segment_job``), so the GUI never blocks.
        """
        from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor  # noqa: PLC0415
        from SemiSupCardiacSegLib.reporting import segmentation_report  # noqa: PLC0415

        if input_node is None:
            raise ValueError("no input volume selected")
        if int(mc_samples) < 1:
            raise ValueError(f"mc_samples must be >= 1, got {mc_samples}")
        volume = volume_from_node(input_node)
        volume = volume.with_array(volume.array.astype(np.float32))
        net, meta = self.load_model(model)
        box = inside = None
        if roi_node is not None:
            inside = roi_mask(roi_node, input_node).array.astype(bool)
            box = mask_box(inside)
        settings = InferenceSettings.from_meta(meta, tta=tta, mc_samples=int(mc_samples), device=device)
        pred = Predictor(net, meta, settings).predict(volume.crop(box) if box else volume, progress)
        if box is not None:
            pred = pred.uncrop(volume, box, inside[box])
        return self._add_result_nodes(
            input_node, pred.labels, meta.labels, pred.foreground_sdm(), pred.entropy, segmentation_report(pred, meta)
        )

    def _add_result_nodes(
        self,
        input_node,
        labels: Volume,
        names: dict[int, str],
        distance: Volume | None,
        uncertainty: Volume,
        report: dict,
        suffix: str = "",
    ) -> SegmentResult:
        """New segmentation, distance and uncertainty nodes named after ``input_node``, coloured, under
        the input's parent transform (so they overlay it wherever it is)."""
        base = input_node.GetName() + suffix
        seg_node = self.add_segmentation_node(labels, input_node, names, f"{base} segmentation")
        distance_node = self.add_volume_node(distance, f"{base} distance") if distance is not None else None
        uncertainty_node = self.add_volume_node(uncertainty, f"{base} uncertainty")
        self._set_color(uncertainty_node, HEATMAP_COLOR_NODE_ID)
        if distance_node is not None:
            self._set_color(distance_node, SDM_COLOR_NODE_ID, window_center=0.0)
        transform_id = input_node.GetTransformNodeID()
        for node in (seg_node, distance_node, uncertainty_node):
            if node is not None and transform_id:
                node.SetAndObserveTransformNodeID(transform_id)
        return SegmentResult(
            segmentation=seg_node,
            distance=distance_node,
            uncertainty=uncertainty_node,
            report=report,
            input_node=input_node,
            labels=labels,
            entropy=uncertainty,
        )

    def import_outputs(self, input_node, out_dir: str | Path, es_node=None) -> SegmentResult:
        """Load what ``python -m SemiSupCardiacSegLib segment`` wrote into ``out_dir`` as new nodes
        (compact uint8 maps are decoded to float32); with ``es_node``, also its ``es/`` outputs (the
        end-systolic frame, ``segment --es``) as ``result.es`` and the cardiac indices of report.json.

        Each file is read once; segment names and label values come from report.json; all files must
        be on the input node's grid (the command guarantees it), else ValueError names the file.
        """
        out = Path(out_dir)
        result = self._import_one(input_node, out, "")
        if es_node is not None:
            result.es = self._import_one(es_node, out / "es", " ES")
            result.cardiac = result.report.get("cardiac_indices")
        return result

    def _import_one(self, input_node, out: Path, suffix: str) -> SegmentResult:
        import json  # noqa: PLC0415

        from SemiSupCardiacSegLib.io import read_label  # noqa: PLC0415
        from SemiSupCardiacSegLib.reporting import read_output_map  # noqa: PLC0415

        report_path = out / "report.json"
        if not report_path.is_file():
            raise ValueError(f"{report_path} is missing")
        report = json.loads(report_path.read_text())
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
        return self._add_result_nodes(
            input_node, loaded["segmentation"], names, loaded.get("distance"), loaded["uncertainty"], report, suffix
        )

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
    def uncertain_regions(
        self, uncertainty, num_classes: int = 2, threshold: float | None = None, min_volume_mm3: float = 20.0
    ) -> list:
        """Regions of high predictive entropy (nats), most uncertain first.

        uncertainty: a ``SegmentResult`` (its entropy as read; its own number of classes) or an
        uncertainty volume node. Each item is a ``SemiSupCardiacSegLib.uncertain_regions.UncertainRegion``;
        its ``centre_ras`` is a voxel centre inside the region, in the input node's RAS mm
        (``jump_slices_to`` maps it to world).
        """
        from SemiSupCardiacSegLib.uncertain_regions import rank_uncertain_regions  # noqa: PLC0415

        if isinstance(uncertainty, SegmentResult):
            entropy, num_classes = uncertainty.entropy, uncertainty.num_classes()
        else:
            entropy = volume_from_node(uncertainty)
        return rank_uncertain_regions(entropy, num_classes, threshold, min_volume_mm3)

    def jump_slices_to(self, ras: tuple[float, float, float], node=None) -> int:
        """Centre every slice view of the scene on ``ras`` (mm, in ``node``'s RAS frame: its parent
        transform is applied; world RAS when ``node`` is None); returns how many views moved."""
        if node is not None:
            ras = (node_to_world(node) @ np.append(np.asarray(ras, float), 1.0))[:3]
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
        sits beside the image. Never overwrites: when NAME is taken (a file, or an entry of the
        manifest), NAME_2, NAME_3, ... are used. A segmentation this Logic made from another volume
        is refused (ValueError naming both). Image, label and manifest entry are one unit: the
        manifest is read (and a corrupt one refused, ValueError naming the file) before anything is
        written, and when a later step fails the files just written are removed again, so a retry
        never leaves orphan copies. Returns (image path, label path or None).
        """
        from SemiSupCardiacSegLib.io import write_volume  # noqa: PLC0415

        source = segmentation_node.GetAttribute(SOURCE_VOLUME_ATTRIBUTE) if segmentation_node is not None else None
        if source and source != volume_node.GetID():
            other = self.scene.GetNodeByID(source)
            raise ValueError(
                f"segmentation '{segmentation_node.GetName()}' was made from volume "
                f"'{other.GetName() if other else source}', not from '{volume_node.GetName()}'"
            )
        library = Path(library_dir)
        if library.exists() and not library.is_dir():
            raise ValueError(f"{library} is a file, not a library folder")
        case_file = volume_node.GetAttribute(LIBRARY_CASE_ATTRIBUTE)
        if case_file and library.is_dir() and Path(case_file).parent.resolve() == library.resolve():
            return self._label_library_case(library, Path(case_file), volume_node, segmentation_node)
        listed = {c.get("name") for c in read_manifest(library)}  # a corrupt manifest stops us here
        image = volume_from_node(volume_node)
        labels = self.labels_from_segmentation(segmentation_node, volume_node) if segmentation_node else None
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in volume_node.GetName()) or "case"
        library.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10000):
            name = stem if n == 1 else f"{stem}_{n}"
            image_path, label_path = library / f"{name}.nrrd", library / f"{name}_label.nrrd"
            if name in listed or image_path.exists() or label_path.exists():
                continue
            written: list[Path] = []
            try:
                if labels is not None:  # the label first: an image alone would read as an unlabeled case
                    written.append(write_volume(labels, label_path))
                written.append(write_volume(image, image_path))
                append_to_manifest(
                    library,
                    {
                        "name": name,
                        "image": image_path.name,
                        "label": label_path.name if labels is not None else None,
                        "labeled": labels is not None,
                        "source_node": volume_node.GetName(),
                        "shape": list(image.shape),
                        "spacing_mm": [float(v) for v in image.spacing],
                    },
                )
            except FileExistsError:
                _remove_files(written)
                continue  # another writer took the name between the check and the write
            except BaseException:
                _remove_files(written)  # one unit: no image without its manifest entry
                raise
            return image_path, (label_path if labels is not None else None)
        raise RuntimeError(f"no free case name for '{stem}' in {library}")

    def _label_library_case(self, library: Path, image: Path, volume_node, segmentation_node) -> tuple[Path, Path]:
        """An unlabeled library case loaded by ``load_library_case``, now corrected: its segmentation
        becomes NAME_label.nrrd and its manifest entry labeled (one unit: the label file is removed
        again when the manifest update fails). ValueError when it is labeled already or no
        segmentation is given."""
        from SemiSupCardiacSegLib.io import write_volume  # noqa: PLC0415

        entry = next((c for c in read_manifest(library) if c.get("image") == image.name), None)
        if entry is None:
            raise ValueError(f"{library / 'manifest.json'} lists no case with image {image.name}")
        name = entry["name"]
        label_path = library / f"{name}_label.nrrd"
        if entry.get("labeled") or label_path.exists():
            raise ValueError(f"library case '{name}' is labeled already ({label_path.name}); nothing was written")
        if segmentation_node is None:
            raise ValueError(f"library case '{name}' is in the library already; segment and correct it to label it")
        labels = self.labels_from_segmentation(segmentation_node, volume_node)
        write_volume(labels, label_path)
        try:
            update_manifest_entry(library, name, {"label": label_path.name, "labeled": True})
        except BaseException:
            _remove_files([label_path])
            raise
        return image, label_path

    # ----------------------------------------------------------------------------- active learning
    def start_suggest_job(
        self,
        library_dir: str | Path,
        model: str | None = None,
        mc_samples: int = 10,
        device: str = "auto",
        python_executable: str | None = None,
    ):
        """Rank the library's unlabeled cases in a child process (``suggest``; ``jobs.SuggestJob``):
        their segmentations go to LIBRARY/suggestions/cases/, their scores into the manifest, which
        ``ranked_library_cases`` then reads. ValueError when the folder is not a library."""
        from SemiSupCardiacSegLib.jobs import SuggestJob  # noqa: PLC0415

        library = _training_library(library_dir)
        return SuggestJob(library, library / SUGGESTIONS_FOLDER, model, mc_samples, device, python_executable)

    def start_adapt_job(
        self,
        library_dir: str | Path,
        out_model: str | Path,
        model: str | None = None,
        device: str = "auto",
        python_executable: str | None = None,
    ):
        """Adapt ``model`` to the library's images in a child process (``adapt``; ``jobs.AdaptJob``):
        its batch-norm statistics re-estimated on every library case's image, no label read, written
        to ``out_model``, loadable as a model path. For a library from another scanner or protocol:
        in ``benchmarks/correction_loop.py`` it won back more of such a shift than fine-tuning on
        corrected cases did. ValueError when the folder is not a library or ``out_model`` exists."""
        from SemiSupCardiacSegLib.jobs import AdaptJob  # noqa: PLC0415

        library = _training_library(library_dir)
        out_model = Path(out_model)
        if out_model.exists():
            raise ValueError(f"{out_model} exists; choose another file")
        out_model.parent.mkdir(parents=True, exist_ok=True)
        return AdaptJob(library, out_model, model, device, python_executable)

    def ranked_library_cases(self, library_dir: str | Path, model: str | None = None) -> list[dict]:
        """The library's unlabeled cases, the one to correct first first, by the scores ``suggest``
        remembered under ``model``'s id: [{"name", "score", "doubtful"}]; cases not yet scored by this
        model follow, with score None. A case with a label file is labeled, whatever the manifest says."""
        library = Path(library_dir)
        model_id = self.model_metadata(model).model_id
        rows = []
        for c in read_manifest(library):
            if c.get("labeled") or (library / f"{c.get('name')}_label.nrrd").exists():
                continue
            scored = (c.get("scores") or {}).get(model_id) or {}
            rows.append({"name": c["name"], "score": scored.get("score"), "doubtful": scored.get("doubtful")})
        return sorted(rows, key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))

    def load_library_case(self, library_dir: str | Path, name: str, model: str | None = None):
        """Load library case ``name`` as a volume node (marked as the library's, so that **Add to
        training library** labels this case instead of adding a copy) -> (node, SegmentResult or
        None): the segmentation ``suggest`` made of it, imported, when it was made by ``model`` from
        this very file (model id and sha256), else None (segment it)."""
        import json  # noqa: PLC0415

        from SemiSupCardiacSegLib.io import file_sha256, read_volume  # noqa: PLC0415

        library = Path(library_dir)
        entry = next((c for c in read_manifest(library) if c.get("name") == name), None)
        if entry is None:
            raise ValueError(f"{library / 'manifest.json'} lists no case '{name}'")
        image = library / entry["image"]
        node = self.add_volume_node(read_volume(image), name)
        node.SetAttribute(LIBRARY_CASE_ATTRIBUTE, str(image.resolve()))
        out = library / SUGGESTIONS_FOLDER / "cases" / name
        try:
            report = json.loads((out / "report.json").read_text())
        except (OSError, ValueError):
            return node, None
        same_model = (report.get("model") or {}).get("id") == self.model_metadata(model).model_id
        if not same_model or report.get("input_sha256") != file_sha256(image):
            return node, None
        return node, self.import_outputs(node, out)

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
            rows.append(
                [
                    name,
                    f"{st['volume_ml']:.2f}",
                    "-" if st.get("mean_boundary_entropy") is None else f"{st['mean_boundary_entropy']:.3f}",
                    "-" if mi is None else f"{mi:.3f}",
                    "doubtful" if st.get("doubtful") else ("ok" if st.get("doubtful") is False else "-"),
                ]
            )
        return self._table(
            f"{result.segmentation.GetName()} results",
            ["structure", "volume (mL)", "boundary entropy (nats)", "boundary MI (nats)", "quality"],
            rows,
        )

    def cardiac_table(self, ed: SegmentResult, es: SegmentResult, reference_ed_node, spacing=None):
        """Table node of LV/RV EDV, ESV, EF and myocardial mass from an ED and an ES segmentation of a
        cine model (labels 1 RV, 2 myocardium, 3 LV) on the same grid (``reference_ed_node``), from
        the label arrays the results keep (their nodes are exported only for a result without them)."""
        from SemiSupCardiacSegLib.cardiac import cardiac_indices  # noqa: PLC0415

        ed_labels = (
            ed.labels if ed.labels is not None else self.labels_from_segmentation(ed.segmentation, reference_ed_node)
        )
        es_labels = (
            es.labels if es.labels is not None else self.labels_from_segmentation(es.segmentation, reference_ed_node)
        )
        values = cardiac_indices(ed_labels.array, es_labels.array, spacing or ed_labels.spacing)
        units = {"ml": "mL", "percent": "%", "g": "g"}
        rows = [
            [k.rsplit("_", 1)[0], f"{v:.1f}", units[k.rsplit("_", 1)[1]]]
            for k, v in values.items()
            if isinstance(v, float) and k.rsplit("_", 1)[1] in units
        ]
        return self._table(f"{reference_ed_node.GetName()} cardiac indices", ["index", "value", "unit"], rows), values

    # ----------------------------------------------------------------------------- background segmentation
    def start_segment_job(
        self,
        input_node,
        out_dir: str | Path | None = None,
        model: str | None = None,
        mc_samples: int = 10,
        device: str = "auto",
        python_executable: str | None = None,
        roi_node=None,
        es_node=None,
    ):
        """Segment ``input_node`` in a child process (the UI stays responsive; ``request_stop()``
        ends it): the volume is written to ``OUT/input.nrrd`` (with ``roi_node``, its voxel mask to
        ``OUT/roi.nrrd``, ``segment --roi-mask``; with ``es_node``, the end-systolic frame to
        ``OUT/es.nrrd``, ``segment --es``) and ``python -m SemiSupCardiacSegLib segment`` runs on
        them; inside Slicer ``python_executable`` is PythonSlicer (``sys.executable``). ``out_dir``
        None: a new temporary folder, ``job.workdir``, which the caller removes (``discard_job``).
        When the job ends with 0, ``import_outputs(input_node, job.out, es_node)`` loads the results.
        Returns a ``jobs.SegmentJob``. Bad input (no image, ROI off the volume, ES frame on another
        grid) raises ValueError before any process starts."""
        import tempfile  # noqa: PLC0415

        from SemiSupCardiacSegLib.io import write_volume  # noqa: PLC0415
        from SemiSupCardiacSegLib.jobs import SegmentJob  # noqa: PLC0415

        if input_node is None:
            raise ValueError("no input volume selected")
        if int(mc_samples) < 1:
            raise ValueError(f"mc_samples must be >= 1, got {mc_samples}")
        volume = volume_from_node(input_node)
        mask = roi_mask(roi_node, input_node) if roi_node is not None else None
        es = volume_from_node(es_node) if es_node is not None else None
        if es is not None and not es.same_grid(volume):
            raise ValueError(f"end-systole volume '{es_node.GetName()}' is not on the grid of '{input_node.GetName()}'")
        workdir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="SemiSupCardiacSeg-"))
        workdir.mkdir(parents=True, exist_ok=True)
        path = write_volume(volume, workdir / "input.nrrd", overwrite=True)
        mask_path = write_volume(mask, workdir / "roi.nrrd", overwrite=True) if mask is not None else None
        es_path = write_volume(es, workdir / "es.nrrd", overwrite=True) if es is not None else None
        job = SegmentJob(
            path,
            workdir / "result",
            model=model,
            mc_samples=mc_samples,
            device=device,
            python=python_executable,
            roi_mask=mask_path,
            es_input=es_path,
        )
        job.workdir = workdir
        return job

    @staticmethod
    def discard_job(job) -> None:
        """Remove a segment job's temporary folder (after import, failure or cancel)."""
        import shutil  # noqa: PLC0415

        workdir = getattr(job, "workdir", None)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    # ----------------------------------------------------------------------------- results tables in the layout
    def show_table(self, table, application_logic=None) -> bool:
        """Show ``table`` in a table view: select it, and switch a layout that has no table view to
        Slicer's 'Four-Up Table' layout (PropagateTableSelection only fills table views that exist).
        Returns True when the layout was switched."""
        switched = False
        layout = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        if layout is not None and "vtkMRMLTableViewNode" not in (layout.GetCurrentLayoutDescription() or ""):
            import slicer  # noqa: PLC0415

            layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
            switched = True
        if application_logic is not None:
            application_logic.GetSelectionNode().SetActiveTableID(table.GetID())
            application_logic.PropagateTableSelection()
        return switched

    # ----------------------------------------------------------------------------- fine-tuning
    def model_metadata(self, model: str | None = None):
        """A checkpoint's ``ModelMeta`` (labels, method, network, training data), read once per file
        version (path, size and modification time) without building the network."""
        from SemiSupCardiacSegLib.checkpoint import read_model_meta, resolve_model_path  # noqa: PLC0415

        path = resolve_model_path(model)
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._metadata_cache:
            self._metadata_cache[key] = read_model_meta(path)[0]
        return self._metadata_cache[key]

    def fine_tune(
        self,
        library_dir: str | Path,
        out_dir: str | Path,
        model: str | None = None,
        iterations: int = FINE_TUNE_ITERATIONS,
        python_executable: str | None = None,
        threads: int | None = None,
        slicer_executable: str | None = None,
    ):
        """Start Training/train.py in a child process: ``model``'s weights, method and network, on the
        library's labeled + unlabeled cases. Inside Slicer ``python_executable`` is PythonSlicer
        (``sys.executable``), which has Slicer's Python and packages and exits when the script ends;
        ``slicer_executable`` runs it as ``Slicer --no-main-window --python-script`` instead.
        Returns a ``jobs.FineTuneJob`` (``progress()``, ``poll()``, ``request_stop()``); the new
        checkpoint is ``out_dir/model.pt``, loadable as a model path."""
        from SemiSupCardiacSegLib.checkpoint import resolve_model_path  # noqa: PLC0415
        from SemiSupCardiacSegLib.jobs import start_fine_tune  # noqa: PLC0415

        meta = self.model_metadata(model)
        return start_fine_tune(
            meta,
            resolve_model_path(model),
            library_dir,
            out_dir,
            iterations,
            python=python_executable,
            slicer=slicer_executable,
            threads=threads,
        )

    def held_out_cases(self, new_model: str) -> list:
        """The labeled library cases a fine-tuned model held out (its checkpoint's
        ``training_data.validation_cases``), as ``CaseFile``s; [] when it held out none (fewer than
        three labeled cases). Raises ValueError when they have left the library since."""
        from SemiSupCardiacSegLib.data import find_cases  # noqa: PLC0415

        data = self.model_metadata(new_model).training_data
        held_out = set(data.get("validation_cases") or [])
        source = data.get("source")
        sources = [source] if isinstance(source, str) else list(source or [])
        if not held_out or not sources:
            return []
        cases = [c for src in sources for c in find_cases(src) if c.name in held_out and c.label is not None]
        if not cases:
            raise ValueError(f"the held-out cases {sorted(held_out)} are no longer in {source}")
        return cases

    def comparison_table(self, old: dict, new: dict):
        """Table node (structure, metric, before, after) of two ``evaluate`` results of the same cases."""
        rows = []
        for structure, summary in new["mean"].items():
            for metric in ("dice", "hd95"):
                before = old["mean"].get(structure, {}).get(metric, {}).get("mean")
                rows.append(
                    [structure, metric, "-" if before is None else f"{before:.3f}", f"{summary[metric]['mean']:.3f}"]
                )
        n = len(new["per_case"])
        return self._table(
            f"fine-tune validation ({n} held-out case{'s' if n > 1 else ''})",
            ["structure", "metric", "before", "after"],
            rows,
        )

    def compare_models(self, old_model: str | None, new_model: str, mc_samples: int = 1, device: str = "auto"):
        """Validation metrics of the model before and after fine-tuning, on the cases the new model held
        out, evaluated in this process (scripts; the Widget runs ``evaluate`` child processes instead).

        Returns (table node: structure, metric, old, new; the dict of both evaluations), or
        (None, None) when the fine-tune held out no case (fewer than three labeled cases in the library).
        """
        from SemiSupCardiacSegLib.evaluation import evaluate_cases  # noqa: PLC0415

        cases = self.held_out_cases(new_model)
        if not cases:
            return None, None
        results = {}
        for which, model in (("old", old_model), ("new", new_model)):
            net, meta = self.load_model(model)
            results[which] = evaluate_cases(net, meta, cases, mc_samples=mc_samples, device=device)
        return self.comparison_table(results["old"], results["new"]), results

    @staticmethod
    def model_choices(registered: list[str] = ()) -> list[str]:
        """The model list: shipped model names present in ``models/``, then the ``registered``
        checkpoint paths (e.g. fine-tuned models) that still exist, without duplicates."""
        names = [m.name for m in SHIPPED.values() if m.path.is_file()]
        for path in registered:
            if path and path not in names and Path(path).is_file():
                names.append(path)
        return names

    def model_labels(self, model: str | None = None) -> list[str] | None:
        """The structures ``model`` segments (labels 1, 2, ...), or None when it names no readable
        checkpoint. A shipped name is answered without reading its file; a checkpoint's metadata is
        read once per file version, so calling this on every keystroke of the model field is cheap."""
        name = (model or "la").strip()
        if name in SHIPPED:
            return list(SHIPPED[name].labels)
        if not Path(name).is_file():
            return None
        try:
            return list(self.model_metadata(name).labels.values())
        except Exception:  # unreadable checkpoint: the segment call itself reports the problem
            return None

    def segment_button_text(self, model: str | None = None) -> str:
        """What the Segment button says for ``model``: 'Segment LA', or the structures of another model."""
        names = self.model_labels(model)
        if not names:
            return "Segment"
        if names == ["left atrium"]:
            return "Segment LA"
        return "Segment " + ", ".join(n.replace("right ventricle", "RV").replace("left ventricle", "LV") for n in names)


def _remove_files(paths: list[Path]) -> None:
    for p in paths:
        try:
            Path(p).unlink()
        except FileNotFoundError:
            pass
