"""SemiSupCardiacSeg: semi-supervised cardiac MR segmentation in 3D Slicer.

This file holds what needs Slicer's GUI: the module description, the Widget (wires the .ui to the
parameter node and calls the Logic) and the self-test. The Logic lives in the Qt-free package
``SemiSupCardiacSegLogic`` (tested headless with slicer-core), and all computation in
``SemiSupCardiacSegLib``; nothing here preprocesses or infers by itself.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Developer checkout (module path added to Slicer by hand): the library sits one folder up.
# An installed extension has SemiSupCardiacSegLib beside this file, on sys.path already.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_REPO_ROOT, "SemiSupCardiacSegLib")) and _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)

from SemiSupCardiacSegLogic import SemiSupCardiacSegLogic as _SceneLogic  # noqa: E402


class SemiSupCardiacSeg(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Semi-Supervised Cardiac Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SemiSupCardiacSeg developers"]
        self.parent.helpText = (
            "Segments the left atrium in cardiac MR with a semi-supervised multi-task network and shows "
            "the signed distance map and a Monte-Carlo-dropout uncertainty heatmap. Correct the mask where "
            "the heatmap is bright, add the case to a training library, and fine-tune with Training/train.py."
        )
        self.parent.acknowledgementText = (
            "Methods: SASSNet (Li et al., MICCAI 2020) and related multi-task semi-supervised methods. "
            "Shipped LA model trained on the 2018 Atrial Segmentation Challenge data (Xiong et al., "
            "Medical Image Analysis 2021); shipped cine model (BMT-CTL, then self-training) trained on ACDC (Bernard et al., IEEE TMI 2018)."
        )


@parameterNodeWrapper
class SemiSupCardiacSegParameterNode:
    """Typed parameter node, bound to the .ui widgets by their SlicerParameterName property.

    inputVolume: the MR volume to segment (for a cine model: the end-diastolic frame). roi: optional
    markups ROI restricting the work. esVolume: optional end-systolic frame for cine ED/ES indices.
    model: shipped model name ('la', 'cine') or checkpoint path.
    mcSamples: Monte-Carlo dropout passes. device: 'auto', 'cpu' or 'cuda'.
    heatmapOpacity: foreground opacity of the uncertainty heatmap in the slice views.
    libraryFolder: where "Add to training library" writes cases.
    """

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    roi: Optional[slicer.vtkMRMLMarkupsROINode] = None
    esVolume: Optional[slicer.vtkMRMLScalarVolumeNode] = None
    model: str = "la"
    mcSamples: int = 10
    device: str = "auto"
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    libraryFolder: str = ""


#: QSettings key holding the checkpoints registered in the model list (fine-tuned models).
REGISTERED_MODELS_KEY = "SemiSupCardiacSeg/registeredModels"
#: QSettings key of the training-library folder: chosen once, remembered across sessions.
LIBRARY_FOLDER_KEY = "SemiSupCardiacSeg/libraryFolder"


class SemiSupCardiacSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the UI; all work is delegated to the Logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: SemiSupCardiacSegLogic | None = None
        self._parameterNode: SemiSupCardiacSegParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._lastResult = None
        self._regions: list = []
        self._regionIndex = -1
        self._fineTuneJob = None
        self._fineTuneFrom = None
        self._fineTuneTimer = None
        self._segmentJob = None
        self._segmentTimer = None
        self._segmentInput = None
        self._segmentDir = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemiSupCardiacSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SemiSupCardiacSegLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.addToLibraryButton.connect("clicked(bool)", self.onAddToLibraryButton)
        self.ui.nextRegionButton.connect("clicked(bool)", self.onNextRegionButton)
        self.ui.fineTuneButton.connect("clicked(bool)", self.onFineTuneButton)
        self.ui.heatmapOpacitySlider.connect("valueChanged(double)", self.logic.set_heatmap_opacity)
        self.ui.modelListComboBox.connect("activated(int)", self.onModelListActivated)
        self._fillModelList()
        self.initializeParameterNode()

    def _registeredModels(self) -> list:
        value = qt.QSettings().value(REGISTERED_MODELS_KEY)
        return [value] if isinstance(value, str) else list(value or [])

    def _fillModelList(self) -> None:
        """Shipped models plus the checkpoints registered by earlier fine-tunes (that still exist)."""
        self.ui.modelListComboBox.clear()
        for name in self.logic.model_choices(self._registeredModels()):
            self.ui.modelListComboBox.addItem(name)

    def onModelListActivated(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.model = self.ui.modelListComboBox.itemText(index)

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.libraryFolder:
            self._parameterNode.libraryFolder = str(qt.QSettings().value(LIBRARY_FOLDER_KEY) or "")
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.segmentButton.enabled = ready
        self.ui.segmentButton.toolTip = "Segment the input volume" if ready else "Select an input volume"
        self.ui.addToLibraryButton.enabled = ready and bool(self._parameterNode.libraryFolder)
        self.ui.fineTuneButton.enabled = bool(self._parameterNode and self._parameterNode.libraryFolder)
        if self._parameterNode and self._segmentJob is None:  # the button says what the model segments (or "Cancel")
            self.ui.segmentButton.text = self.logic.segment_button_text(self._parameterNode.model or None)

    def _ensureTorch(self) -> bool:
        """True when torch can be imported; otherwise offer to install it (SlicerPyTorch's installer
        where that extension is present, which picks the build for the GPU, else pip) before anything runs."""
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            return True
        if not slicer.util.confirmOkCancelDisplay(
                "This module needs PyTorch, which is not installed in Slicer's Python. Install it now? "
                "(The download can be large; Slicer may need a restart afterwards.)", "PyTorch is missing"):
            return False
        with slicer.util.tryWithErrorDisplay("Installing PyTorch failed.", waitCursor=True):
            try:
                import PyTorchUtils  # the SlicerPyTorch extension, which this extension depends on

                PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
            except ImportError:
                slicer.util.pip_install("torch")
        importlib.invalidate_caches()
        return importlib.util.find_spec("torch") is not None

    def onSegmentButton(self) -> None:
        """Start segmentation in a child process (the UI stays responsive), or cancel the running one.

        With a ROI the work runs in-process through the Logic (the crop is small)."""
        if self._segmentJob is not None and self._segmentJob.poll() is None:
            self._segmentJob.cancel()
            self._finishSegment("Segmentation cancelled")
            return
        if not self._ensureTorch():
            return
        p = self._parameterNode
        if p.roi is not None:
            with slicer.util.tryWithErrorDisplay("Segmentation failed.", waitCursor=True):
                self._showResult(self.logic.segment(p.inputVolume, model=p.model or None, roi_node=p.roi,
                                                    mc_samples=p.mcSamples, device=p.device))
            return
        import tempfile

        with slicer.util.tryWithErrorDisplay("Could not start segmentation.", waitCursor=True):
            self._segmentDir = tempfile.mkdtemp(prefix="SemiSupCardiacSeg-")
            # In Slicer, sys.executable is PythonSlicer: the child has Slicer's Python and packages.
            self._segmentJob = self.logic.start_segment_job(p.inputVolume, self._segmentDir, model=p.model or None,
                                                            mc_samples=p.mcSamples, device=p.device,
                                                            python_executable=sys.executable)
            self._segmentInput = p.inputVolume
            self.ui.segmentButton.text = "Cancel"
            self._segmentTimer = self._startPolling(self._pollSegment, 500)

    @staticmethod
    def _startPolling(callback, interval_ms: int):
        """A started QTimer calling ``callback`` every ``interval_ms`` (a child job's progress poll)."""
        timer = qt.QTimer()
        timer.timeout.connect(callback)
        timer.start(interval_ms)
        return timer

    def _pollSegment(self) -> None:
        job = self._segmentJob
        if job is None:
            return
        self.ui.statusLabel.text = f"Segmenting... {int(100 * job.progress())}%"
        code = job.poll()
        if code is None:
            return
        if code != 0:
            self._finishSegment(f"Segmentation failed: {job.error() or f'exit code {code}'}")
            return
        self._finishSegment("")  # stop polling first: tryWithErrorDisplay re-raises after its dialog
        with slicer.util.tryWithErrorDisplay("Loading the results failed.", waitCursor=True):
            self._showResult(self.logic.import_outputs(self._segmentInput, job.out))

    def _finishSegment(self, message: str) -> None:
        if self._segmentTimer is not None:
            self._segmentTimer.stop()
        self._segmentTimer = None
        self._segmentJob = None
        self._checkCanApply()
        if message:
            self.ui.statusLabel.text = message

    def _showResult(self, result) -> None:
        """Overlays, results table, uncertain regions and the status line of a finished segmentation."""
        p = self._parameterNode
        self._lastResult = result
        self.logic.show_overlays(p.inputVolume, result, p.heatmapOpacity)
        table = self.logic.results_table(result)  # volumes, boundary uncertainty, quality flag
        if p.esVolume is not None and set(result.report["structures"]) >= {"left ventricle", "right ventricle", "myocardium"}:
            # Cine ED/ES pair: segment the end-systolic frame too (slice-wise, quick) and tabulate the indices.
            es = self.logic.segment(p.esVolume, model=p.model or None, mc_samples=p.mcSamples, device=p.device)
            table, _ = self.logic.cardiac_table(result, es, p.inputVolume)
        self._showTable(table)
        volumes = {k: round(v["volume_ml"], 1) for k, v in result.report["structures"].items()}
        num_classes = len(result.report["structures"]) + 1
        self._regions = self.logic.uncertain_regions(result.uncertainty, num_classes)
        self._regionIndex = -1
        self.ui.nextRegionButton.enabled = bool(self._regions)
        doubtful = [k for k, v in result.report["structures"].items() if v.get("doubtful")]
        self.ui.statusLabel.text = (f"Done: {volumes} mL; {len(self._regions)} uncertain regions to review"
                                    + (f". Doubtful: {', '.join(doubtful)}; review before use" if doubtful else ""))

    @staticmethod
    def _showTable(table) -> None:
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()

    def onNextRegionButton(self) -> None:
        if not self._regions:
            return
        self._regionIndex = (self._regionIndex + 1) % len(self._regions)
        region = self._regions[self._regionIndex]
        self.logic.jump_slices_to(region.centre_ras)
        self.ui.statusLabel.text = (f"Region {self._regionIndex + 1}/{len(self._regions)}: mean entropy "
                                    f"{region.mean_entropy:.2f} nats, {region.volume_mm3:.0f} mm^3")

    def onAddToLibraryButton(self) -> None:
        p = self._parameterNode
        segmentation = self._lastResult.segmentation if self._lastResult else None
        with slicer.util.tryWithErrorDisplay("Adding the case to the training library failed.", waitCursor=True):
            image_path, label_path = self.logic.add_to_library(p.inputVolume, p.libraryFolder, segmentation)
            qt.QSettings().setValue(LIBRARY_FOLDER_KEY, p.libraryFolder)
            self.ui.statusLabel.text = f"Added {os.path.basename(image_path)}" + (" (labeled)" if label_path else "")


    def onFineTuneButton(self) -> None:
        """Start a fine-tune child process (Slicer headless), or cancel the running one."""
        if not self._ensureTorch():
            return
        if self._fineTuneJob is not None and self._fineTuneJob.poll() is None:
            self._fineTuneJob.cancel()
            self._finishFineTune("Fine-tuning cancelled (last.pt kept; Training/train.py --resume continues it)")
            return
        p = self._parameterNode
        import time

        out = os.path.join(p.libraryFolder, "fine_tuned", time.strftime("%Y%m%d-%H%M%S"))
        with slicer.util.tryWithErrorDisplay("Could not start fine-tuning.", waitCursor=True):
            self._fineTuneFrom = p.model or None  # compared with the new model when the job ends
            self._fineTuneJob = self.logic.fine_tune(p.libraryFolder, out, model=p.model or None,
                                                     slicer_executable=slicer.app.applicationFilePath())
            self.ui.fineTuneButton.text = "Cancel fine-tuning"
            self.ui.statusLabel.text = f"Fine-tuning into {out}"
            self._fineTuneTimer = self._startPolling(self._pollFineTune, 2000)

    def _pollFineTune(self) -> None:
        job = self._fineTuneJob
        if job is None:
            return
        self.ui.fineTuneProgressBar.value = int(100 * job.progress())
        code = job.poll()
        if code is None:
            return
        model = os.path.join(str(job.out), "model.pt")
        if code == 0 and os.path.exists(model):
            old = self._fineTuneFrom
            qt.QSettings().setValue(REGISTERED_MODELS_KEY, self._registeredModels() + [model])
            self._fillModelList()
            self._parameterNode.model = model  # the new checkpoint becomes the selected model
            self._finishFineTune(f"Fine-tuned model: {model} (registered and selected)")  # stops polling first
            with slicer.util.tryWithErrorDisplay("Comparing the old and new model failed.", waitCursor=True):
                table, results = self.logic.compare_models(old, model, device=self._parameterNode.device)
                if table is not None:  # validation metrics before / after, on the held-out library case
                    self._showTable(table)
                    dice = {w: sum(s["dice"]["mean"] for s in r["mean"].values()) / len(r["mean"]) for w, r in results.items()}
                    self.ui.statusLabel.text += f"; held-out Dice {dice['old']:.3f} before, {dice['new']:.3f} after"
        else:
            self._finishFineTune(f"Fine-tuning failed (exit {code}); see {job.out}/fine_tune_stdout.txt")

    def _finishFineTune(self, message: str) -> None:
        if self._fineTuneTimer is not None:
            self._fineTuneTimer.stop()
        self._fineTuneTimer = None
        self._fineTuneJob = None
        self.ui.fineTuneButton.text = "Fine-tune on library"
        self.ui.statusLabel.text = message


class SemiSupCardiacSegLogic(ScriptedLoadableModuleLogic, _SceneLogic):
    """Slicer-side Logic: the Qt-free scene Logic on slicer.mrmlScene plus the parameter node."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        _SceneLogic.__init__(self, slicer.mrmlScene)

    def getParameterNode(self):
        return SemiSupCardiacSegParameterNode(super().getParameterNode())


class SemiSupCardiacSegTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: segment a synthetic phantom and export it to a temporary library."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_segment_phantom()

    def test_segment_phantom(self) -> None:
        import tempfile

        import numpy as np

        from SemiSupCardiacSegLib.phantoms import make_la_phantom
        from SemiSupCardiacSegLib.volume import Volume

        self.delayDisplay("Segmenting a synthetic LA phantom")
        phantom = make_la_phantom(seed=3)
        logic = SemiSupCardiacSegLogic()
        image = Volume(phantom.image, spacing=phantom.spacing)
        node = logic.add_volume_node(image, "phantom")
        result = logic.segment(node, mc_samples=2)
        labels = logic.labels_from_segmentation(result.segmentation, node)
        self.assertEqual(labels.shape, image.shape)
        self.assertGreater(int(labels.array.sum()), 0)
        with tempfile.TemporaryDirectory() as folder:
            first, _ = logic.add_to_library(node, folder, result.segmentation)
            second, _ = logic.add_to_library(node, folder, result.segmentation)
            self.assertNotEqual(first, second)
        self.assertTrue(np.isfinite(result.report["structures"]["left atrium"]["volume_ml"]))
        self.delayDisplay("Test passed")
