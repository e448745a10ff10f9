"""SemiSupCardiacSeg: semi-supervised cardiac MR segmentation in 3D Slicer.

This file holds what needs Slicer's GUI: the module description, the Widget (wires the .ui to the
parameter node and calls the Logic) and the self-test. The Logic's scene work lives in the Qt-free
package ``SemiSupCardiacSegSceneLogic`` (``SceneLogic``, tested headless with slicer-core), and all
computation in ``SemiSupCardiacSegLib``; nothing here preprocesses or infers by itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
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

from SemiSupCardiacSegSceneLogic import SceneLogic  # noqa: E402
from SemiSupCardiacSegSceneLogic.logic import LIBRARY_CASE_ATTRIBUTE, SOURCE_VOLUME_ATTRIBUTE  # noqa: E402

from SemiSupCardiacSegLib.jobs import FINE_TUNE_ITERATIONS  # noqa: E402


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
            "the heatmap is bright, add the case to a training library, and fine-tune the model on it."
        )
        self.parent.acknowledgementText = (
            "Methods: SASSNet (Li et al., MICCAI 2020) and related multi-task semi-supervised methods. "
            "Shipped LA model trained on the 2018 Atrial Segmentation Challenge data (Xiong et al., "
            "Medical Image Analysis 2021); shipped cine model (BMT-CTL, then self-training) trained on ACDC "
            "(Bernard et al., IEEE TMI 2018)."
        )


@parameterNodeWrapper
class SemiSupCardiacSegParameterNode:
    """Typed parameter node, bound to the .ui widgets by their SlicerParameterName property.

    inputVolume: the MR volume to segment (for a cine model: the end-diastolic frame). roi: optional
    markups ROI restricting the work. esVolume: optional end-systolic frame for cine ED/ES indices.
    model: shipped model name ('la', 'cine') or checkpoint path.
    mcSamples: Monte-Carlo dropout passes (1..64). device: 'auto', 'cpu' or 'cuda'.
    heatmapOpacity: foreground opacity of the uncertainty heatmap in the slice views.
    libraryFolder: where "Add to training library" writes cases; an empty field (``Path(".")``) means
    none chosen, never the current folder. fineTuneIterations: iterations of a fine-tune.
    """

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    roi: Optional[slicer.vtkMRMLMarkupsROINode] = None
    esVolume: Optional[slicer.vtkMRMLScalarVolumeNode] = None
    model: str = "la"
    mcSamples: Annotated[int, WithinRange(1, 64)] = 10
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    libraryFolder: Path = Path()
    fineTuneIterations: Annotated[int, WithinRange(10, 100000)] = FINE_TUNE_ITERATIONS


#: QSettings key holding the checkpoints registered in the model list (fine-tuned models).
REGISTERED_MODELS_KEY = "SemiSupCardiacSeg/registeredModels"
#: QSettings key of the training-library folder: chosen once, remembered across sessions.
LIBRARY_FOLDER_KEY = "SemiSupCardiacSeg/libraryFolder"
#: How often the one job timer polls the running child process (ms).
POLL_INTERVAL_MS = 500


def chosen_folder(path) -> Path | None:
    """The folder a path field holds, or None when it is empty: ``Path("")`` is ``Path(".")``,
    which would otherwise silently mean the current folder."""
    text = str(path or "").strip()
    return None if text in ("", ".") else Path(text)


class SemiSupCardiacSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the UI to the Logic. Every inference and fine-tune runs in a child process (PythonSlicer,
    ``sys.executable``) through one ``JobRunner`` polled by one timer, so the GUI never blocks."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: SemiSupCardiacSegLogic | None = None
        self._parameterNode: SemiSupCardiacSegParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._result = None  # SegmentResult of the last segmentation (tied to its input node)
        self._regions: list = []
        self._regionIndex = -1
        self._runner = None
        self._timer = None
        self._suggestions: list = []  # ranked unlabeled library cases, as the combo box lists them

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from SemiSupCardiacSegLib.jobs import JobRunner

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemiSupCardiacSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SemiSupCardiacSegLogic()
        self._runner = JobRunner()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._pollJob)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.addToLibraryButton.connect("clicked(bool)", self.onAddToLibraryButton)
        self.ui.nextRegionButton.connect("clicked(bool)", self.onNextRegionButton)
        self.ui.fineTuneButton.connect("clicked(bool)", self.onFineTuneButton)
        self.ui.adaptButton.connect("clicked(bool)", self.onAdaptButton)
        self.ui.suggestButton.connect("clicked(bool)", self.onSuggestButton)
        self.ui.loadSuggestionButton.connect("clicked(bool)", self.onLoadSuggestionButton)
        self.ui.heatmapOpacitySlider.connect("valueChanged(double)", self.logic.set_heatmap_opacity)
        self.ui.modelListComboBox.connect("activated(int)", self.onModelListActivated)
        self._fillModelList()
        self.initializeParameterNode()

    # ------------------------------------------------------------------------------ model list
    def _registeredModels(self) -> list:
        value = qt.QSettings().value(REGISTERED_MODELS_KEY)
        return [value] if isinstance(value, str) else list(value or [])

    def _registerAndSelect(self, model: Path) -> None:
        """Add a new checkpoint (fine-tuned or adapted) to the model list and select it."""
        qt.QSettings().setValue(REGISTERED_MODELS_KEY, self._registeredModels() + [str(model)])
        self._fillModelList()
        self._parameterNode.model = str(model)

    def _fillModelList(self) -> None:
        """Shipped models plus the checkpoints registered by earlier fine-tunes (that still exist)."""
        self.ui.modelListComboBox.clear()
        for name in self.logic.model_choices(self._registeredModels()):
            self.ui.modelListComboBox.addItem(name)

    def onModelListActivated(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.model = self.ui.modelListComboBox.itemText(index)

    # ------------------------------------------------------------------------------ lifecycle
    def cleanup(self) -> None:
        """Module unloaded or application closing: stop the timer, end a running child (a fine-tune
        saves last.pt), remove its temporary folder, drop observers."""
        if self._timer is not None:
            self._timer.stop()
        if self._runner is not None:
            job = self._runner.job
            self._runner.shutdown()
            if job is not None:
                self.logic.discard_job(job)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self._disconnectParameterNode()

    def _disconnectParameterNode(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            if self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply):
                self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        """The scene goes: a segmentation of one of its volumes is stopped (a fine-tune goes on)."""
        if self._runner is not None and self._runner.label == "segment":
            self._runner.cancel()
        self.setParameterNode(None)
        self._result, self._regions, self._regionIndex = None, [], -1

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if chosen_folder(self._parameterNode.libraryFolder) is None:
            remembered = chosen_folder(qt.QSettings().value(LIBRARY_FOLDER_KEY))
            if remembered is not None:
                self._parameterNode.libraryFolder = remembered
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        label = self._runner.label if self._runner is not None else ""
        ready = bool(p and p.inputVolume)
        library = chosen_folder(p.libraryFolder) if p else None
        self.ui.segmentButton.enabled = (ready and not label) or label == "segment"
        self.ui.segmentButton.toolTip = (
            "Stop the segmentation"
            if label == "segment"
            else "A fine-tune is running"
            if label
            else "Segment the input volume"
            if ready
            else "Select an input volume"
        )
        self.ui.addToLibraryButton.enabled = ready and library is not None
        self.ui.fineTuneButton.enabled = (library is not None and not label) or label.startswith("fine-tune")
        self.ui.suggestButton.enabled = (library is not None and not label) or label == "suggest"
        self.ui.adaptButton.enabled = (library is not None and not label) or label == "adapt"
        self.ui.loadSuggestionButton.enabled = bool(self._suggestions) and not label
        if label != "segment" and p:  # the button says what the model segments (or "Cancel")
            self.ui.segmentButton.text = self.logic.segment_button_text(p.model or None)

    # ------------------------------------------------------------------------------ dependencies
    def _ensureDependencies(self) -> bool:
        """True when torch and the library's other packages import; otherwise, with the user's consent,
        install them first (torch through the PyTorch extension's PyTorchUtils, which picks the build
        for the GPU; the rest with slicer.util.pip_install) and say when Slicer must restart."""
        import importlib
        import importlib.util

        from SemiSupCardiacSegLib.dependencies import missing_packages

        need_torch = importlib.util.find_spec("torch") is None
        missing = missing_packages()
        if not need_torch and not missing:
            return True
        what = (["PyTorch"] if need_torch else []) + missing
        if not slicer.util.confirmOkCancelDisplay(
            f"This module needs {', '.join(what)}, not installed in Slicer's Python. Install now? "
            "(PyTorch is a large download.)",
            "Missing Python packages",
        ):
            self.ui.statusLabel.text = f"Not started: {', '.join(what)} not installed"
            return False
        with slicer.util.tryWithErrorDisplay("Installing the Python packages failed.", waitCursor=True):
            if need_torch:
                try:
                    import PyTorchUtils  # the SlicerPyTorch extension, which this extension depends on
                except ImportError:
                    raise RuntimeError(
                        "PyTorch is missing and the PyTorch extension (PyTorchUtils) is not installed: "
                        "install 'PyTorch' from the Extensions Manager, restart Slicer, try again"
                    )
                if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
                    raise RuntimeError("PyTorchUtils did not install PyTorch")
            if missing:
                slicer.util.pip_install(missing)
        importlib.invalidate_caches()
        still = (["PyTorch"] if importlib.util.find_spec("torch") is None else []) + missing_packages()
        if still:
            self.ui.statusLabel.text = (
                f"Still missing after installation: {', '.join(still)}; restart Slicer and try again"
            )
        return not still

    # ------------------------------------------------------------------------------ the one job runner
    def _startJob(self, job, on_done, label: str) -> None:
        self._runner.start(job, on_done, label)
        self._timer.start()
        self._checkCanApply()

    def _pollJob(self) -> None:
        runner = self._runner
        if runner.job is not None:
            fraction = runner.progress()
            if runner.label == "segment":
                self.ui.statusLabel.text = f"Segmenting... {int(100 * fraction)}%"
            elif runner.label == "suggest":
                self.ui.statusLabel.text = f"Ranking the library's unlabeled cases... {int(100 * fraction)}%"
            elif runner.label == "fine-tune":
                self.ui.fineTuneProgressBar.value = int(100 * fraction)
            elif runner.label == "adapt":
                self.ui.statusLabel.text = f"Adapting the model to the library's images... {int(100 * fraction)}%"
        if not runner.poll():
            self._timer.stop()
        self._checkCanApply()

    # ------------------------------------------------------------------------------ segment
    def onSegmentButton(self) -> None:
        """Start segmentation in a child process, or stop the running one."""
        if self._runner.label == "segment":
            self._runner.cancel()  # returns at once; the poll sees the end
            self.ui.statusLabel.text = "Stopping the segmentation..."
            return
        if not self._ensureDependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not start segmentation.", waitCursor=True):
            job = self.logic.start_segment_job(
                p.inputVolume,
                model=p.model or None,
                mc_samples=p.mcSamples,
                device=p.device,
                python_executable=sys.executable,
                roi_node=p.roi,
                es_node=p.esVolume,
            )
            input_node, es_node = p.inputVolume, p.esVolume
            self._startJob(job, lambda code, j: self._segmentDone(code, j, input_node, es_node), "segment")
            self.ui.segmentButton.text = "Cancel"
            self.ui.statusLabel.text = "Segmenting... 0%"

    def _segmentDone(self, code: int, job, input_node, es_node) -> None:
        try:
            if job.stop_requested:
                self.ui.statusLabel.text = "Segmentation cancelled"
            elif code != 0:
                self.ui.statusLabel.text = f"Segmentation failed: {job.error() or f'exit code {code}'}"
            elif not slicer.mrmlScene.IsNodePresent(input_node):
                self.ui.statusLabel.text = "Segmentation discarded: its input volume is no longer in the scene"
            else:
                with slicer.util.tryWithErrorDisplay("Loading the results failed.", waitCursor=True):
                    self._showResult(self.logic.import_outputs(input_node, job.out, es_node))
        finally:
            self.logic.discard_job(job)

    def _showResult(self, result) -> None:
        """Overlays, results table, uncertain regions and the status line of a finished segmentation."""
        p = self._parameterNode
        self._result = result
        self.logic.show_overlays(result.input_node, result, p.heatmapOpacity)
        if result.es is not None and result.cardiac is not None:
            table, _ = self.logic.cardiac_table(result, result.es, result.input_node)
        else:
            table = self.logic.results_table(result)  # volumes, boundary uncertainty, quality flag
        self.logic.show_table(table, slicer.app.applicationLogic())
        volumes = {k: round(v["volume_ml"], 1) for k, v in result.report["structures"].items()}
        self._regions = self.logic.uncertain_regions(result)
        self._regionIndex = -1
        self.ui.nextRegionButton.enabled = bool(self._regions)
        doubtful = [k for k, v in result.report["structures"].items() if v.get("doubtful")]
        self.ui.statusLabel.text = f"Done: {volumes} mL; {len(self._regions)} uncertain regions to review" + (
            f". Doubtful: {', '.join(doubtful)}; review before use" if doubtful else ""
        )

    def onNextRegionButton(self) -> None:
        if not self._regions or self._result is None:
            return
        self._regionIndex = (self._regionIndex + 1) % len(self._regions)
        region = self._regions[self._regionIndex]
        self.logic.jump_slices_to(region.centre_ras, self._result.input_node)
        self.ui.statusLabel.text = (
            f"Region {self._regionIndex + 1}/{len(self._regions)}: mean entropy "
            f"{region.mean_entropy:.2f} nats, {region.volume_mm3:.0f} mm^3"
        )

    # ------------------------------------------------------------------------------ library
    def onAddToLibraryButton(self) -> None:
        """Write the selected volume as a library case: labeled with the last segmentation (as
        corrected in Segment Editor) only when that segmentation was made from this volume."""
        p = self._parameterNode
        folder = chosen_folder(p.libraryFolder)
        if folder is None:
            self.ui.statusLabel.text = "Choose a library folder first"
            return
        result = self._result
        segmentation = None
        note = ""
        if result is not None and slicer.mrmlScene.IsNodePresent(result.segmentation):
            if result.segmentation.GetAttribute(SOURCE_VOLUME_ATTRIBUTE) == p.inputVolume.GetID():
                segmentation = result.segmentation
            else:
                note = (
                    f" unlabeled: the last segmentation is of '{result.input_node.GetName()}', "
                    f"not of '{p.inputVolume.GetName()}'"
                )
        case_file = p.inputVolume.GetAttribute(LIBRARY_CASE_ATTRIBUTE)  # loaded from this library: labels it
        from_library = bool(case_file) and folder.is_dir() and Path(case_file).parent.resolve() == folder.resolve()
        with slicer.util.tryWithErrorDisplay("Adding the case to the training library failed.", waitCursor=True):
            image_path, label_path = self.logic.add_to_library(p.inputVolume, folder, segmentation)
            qt.QSettings().setValue(LIBRARY_FOLDER_KEY, str(folder))
            if self._suggestions:  # a suggested case labeled now leaves the list
                self._fillSuggestions()
            if from_library:
                self.ui.statusLabel.text = f"Labeled library case {image_path.stem} ({label_path.name})"
                return
            self.ui.statusLabel.text = f"Added {os.path.basename(image_path)}" + (
                " (labeled)" if label_path else note or " (unlabeled)"
            )

    # ------------------------------------------------------------------------------ which case next
    def onSuggestButton(self) -> None:
        """Rank the library's unlabeled cases by the model's uncertainty in a child process, or stop it."""
        if self._runner.label == "suggest":
            self._runner.cancel()
            self.ui.statusLabel.text = "Stopping the ranking..."
            return
        if not self._ensureDependencies():
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not rank the library's cases.", waitCursor=True):
            job = self.logic.start_suggest_job(
                chosen_folder(p.libraryFolder),
                model=p.model or None,
                mc_samples=max(2, p.mcSamples),
                device=p.device,
                python_executable=sys.executable,
            )
            self._startJob(job, self._suggestDone, "suggest")
            self.ui.suggestButton.text = "Cancel ranking"

    def _suggestDone(self, code: int, job) -> None:
        self.ui.suggestButton.text = "Suggest next case"
        if job.stop_requested:
            self.ui.statusLabel.text = "Ranking cancelled"
            return
        if code not in (0, 1):  # 1: some case failed, the others are ranked
            self.ui.statusLabel.text = f"Ranking failed: {job.error() or f'exit code {code}'}"
            return
        self._fillSuggestions()
        failed = f"; {job.error()}" if code == 1 else ""
        self.ui.statusLabel.text = f"{len(self._suggestions)} unlabeled cases ranked, most uncertain first{failed}"

    def _fillSuggestions(self) -> None:
        p = self._parameterNode
        self._suggestions = self.logic.ranked_library_cases(chosen_folder(p.libraryFolder), p.model or None)
        combo = self.ui.suggestionsComboBox
        combo.clear()
        for r in self._suggestions:
            score = "not scored" if r["score"] is None else f"score {r['score']:.3f}"
            combo.addItem(f"{r['name']} ({score}{', doubtful' if r['doubtful'] else ''})")
        self._checkCanApply()

    def onLoadSuggestionButton(self) -> None:
        """Load the chosen case with the segmentation the ranking made of it (or segment it)."""
        index = self.ui.suggestionsComboBox.currentIndex
        if not 0 <= index < len(self._suggestions):
            return
        p = self._parameterNode
        name = self._suggestions[index]["name"]
        with slicer.util.tryWithErrorDisplay(f"Loading library case '{name}' failed.", waitCursor=True):
            node, result = self.logic.load_library_case(chosen_folder(p.libraryFolder), name, p.model or None)
            p.inputVolume = node
            if result is not None:
                self._showResult(result)
            else:
                self.onSegmentButton()

    # ------------------------------------------------------------------------------ adapt
    def onAdaptButton(self) -> None:
        """Adapt the selected model to the library's images in a child process (no label read), or stop it."""
        if self._runner.label == "adapt":
            self._runner.cancel()
            self.ui.statusLabel.text = "Stopping the adaptation..."
            return
        if not self._ensureDependencies():
            return
        import time

        p = self._parameterNode
        folder = chosen_folder(p.libraryFolder)
        out = folder / "adapted" / time.strftime("%Y%m%d-%H%M%S") / "model.pt"
        with slicer.util.tryWithErrorDisplay("Could not adapt the model.", waitCursor=True):
            job = self.logic.start_adapt_job(
                folder, out, model=p.model or None, device=p.device, python_executable=sys.executable
            )
            self._startJob(job, self._adaptDone, "adapt")
            self.ui.adaptButton.text = "Cancel adaptation"

    def _adaptDone(self, code: int, job) -> None:
        self.ui.adaptButton.text = "Adapt model to library images"
        if job.stop_requested:
            self.ui.statusLabel.text = "Adaptation cancelled"
            return
        model = job.model_path
        if code != 0 or not model.is_file():
            self.ui.statusLabel.text = f"Adaptation failed: {job.error() or f'exit code {code}'} (log: {job.log_path})"
            return
        self._registerAndSelect(model)
        self.ui.statusLabel.text = f"Adapted model: {model} (registered and selected)"

    # ------------------------------------------------------------------------------ fine-tune
    def onFineTuneButton(self) -> None:
        """Start a fine-tune child process (then the before/after evaluation), or stop it."""
        if self._runner.label.startswith("fine-tune"):
            self._runner.cancel()
            self.ui.statusLabel.text = "Stopping the fine-tune (it saves last.pt)..."
            return
        if not self._ensureDependencies():
            return
        import time

        p = self._parameterNode
        folder = chosen_folder(p.libraryFolder)
        out = folder / "fine_tuned" / time.strftime("%Y%m%d-%H%M%S")
        old = p.model or None
        with slicer.util.tryWithErrorDisplay("Could not start fine-tuning.", waitCursor=True):
            job = self.logic.fine_tune(
                folder, out, model=old, iterations=p.fineTuneIterations, python_executable=sys.executable
            )
            self._startJob(job, lambda code, j: self._fineTuneDone(code, j, old), "fine-tune")
            self.ui.fineTuneButton.text = "Cancel fine-tuning"
            self.ui.fineTuneProgressBar.value = 0
            self.ui.statusLabel.text = f"Fine-tuning into {out}"

    def _fineTuneDone(self, code: int, job, old) -> None:
        self.ui.fineTuneButton.text = "Fine-tune on library"
        model = job.out / "model.pt"
        if job.stop_requested:
            self.ui.statusLabel.text = (
                f"Fine-tuning cancelled (last.pt kept in {job.out}; Training/train.py --resume continues it)"
            )
            return
        if code != 0 or not model.is_file():
            self.ui.statusLabel.text = f"Fine-tuning failed: {job.error() or f'exit code {code}'} (log: {job.log_path})"
            return
        self.ui.fineTuneProgressBar.value = 100
        self._registerAndSelect(model)  # the new checkpoint becomes the selected model
        self.ui.statusLabel.text = f"Fine-tuned model: {model} (registered and selected)"
        with slicer.util.tryWithErrorDisplay("Comparing the old and new model failed.", waitCursor=True):
            cases = self.logic.held_out_cases(str(model))
            if cases:  # validation metrics before / after on the held-out library case(s), in children
                self._evaluate([old, str(model)], [c.image for c in cases], job.out, {})
            else:  # a fine-tune on one case can make the model worse on others (benchmarks/correction_loop.py)
                self.ui.statusLabel.text += (
                    "; not checked on a case it did not train on (fewer than 3 corrected cases): "
                    "review its results before relying on it"
                )

    def _evaluate(self, models: list, cases: list, out: Path, results: dict) -> None:
        """Evaluate ``models`` one after the other in child processes; then show the comparison table."""
        from SemiSupCardiacSegLib.jobs import EvaluateJob

        which = "old" if not results else "new"
        job = EvaluateJob(
            models[len(results)],
            cases,
            out / f"evaluate_{which}.json",
            device=self._parameterNode.device,
            python=sys.executable,
        )

        def done(code, j):
            if code != 0 or j.stop_requested:
                self.ui.statusLabel.text += f"; comparison not made ({j.error() or f'exit code {code}'})"
                return
            import json

            results[which] = json.loads(j.result_path.read_text())
            if which == "old":
                self._evaluate(models, cases, out, results)
                return
            table = self.logic.comparison_table(results["old"], results["new"])
            self.logic.show_table(table, slicer.app.applicationLogic())
            dice = {w: sum(s["dice"]["mean"] for s in r["mean"].values()) / len(r["mean"]) for w, r in results.items()}
            self.ui.statusLabel.text += f"; held-out Dice {dice['old']:.3f} before, {dice['new']:.3f} after"
            if dice["new"] < dice["old"] and models[0]:  # worse on the case it did not train on: keep the old one
                self._parameterNode.model = models[0]
                self.ui.statusLabel.text += " - worse, so the old model stays selected (the new one is in the list)"

        self._startJob(job, done, f"fine-tune: evaluating the {which} model")


class SemiSupCardiacSegLogic(SceneLogic, ScriptedLoadableModuleLogic):
    """Slicer-side Logic: the Qt-free scene Logic on slicer.mrmlScene plus the parameter node.

    The scene Logic comes first in the bases: ScriptedLoadableModuleLogic.__init__ calls
    ``super().__init__()``, which must reach ``object``, not the scene Logic (that needs a scene)."""

    def __init__(self) -> None:
        SceneLogic.__init__(self, slicer.mrmlScene)
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return SemiSupCardiacSegParameterNode(super().getParameterNode())


class SemiSupCardiacSegTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: a small synthetic LA phantom segmented by the shipped model in a child
    process (2 MC samples), through the module's own job runner; skipped when torch is missing."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_segment_phantom()

    def test_segment_phantom(self) -> None:
        import importlib.util
        import tempfile
        import time

        if importlib.util.find_spec("torch") is None:
            self.delayDisplay(
                "SemiSupCardiacSeg self-test skipped: PyTorch is not installed "
                "(open the module and click Segment to install it)"
            )
            return
        from SemiSupCardiacSegLib.phantoms import make_la_phantom
        from SemiSupCardiacSegLib.volume import Volume

        self.delayDisplay("Segmenting a small synthetic LA phantom in a child process")
        phantom = make_la_phantom(shape=(64, 64, 32), spacing=(1.5, 1.5, 1.5), seed=3)
        logic = SemiSupCardiacSegLogic()
        node = logic.add_volume_node(Volume(phantom.image, spacing=phantom.spacing), "phantom")
        job = logic.start_segment_job(node, model="la", mc_samples=2, device="cpu", python_executable=sys.executable)
        try:
            deadline = time.monotonic() + 300
            while job.poll() is None and time.monotonic() < deadline:
                slicer.app.processEvents()
                time.sleep(0.1)
            self.assertEqual(job.poll(), 0, job.error())
            result = logic.import_outputs(node, job.out)
        finally:
            logic.discard_job(job)
        self.assertFalse(os.path.exists(job.workdir))
        self.assertTrue(result.labels.same_grid(Volume(phantom.image, spacing=phantom.spacing)))
        self.assertGreater(int(result.labels.array.sum()), 0)
        with tempfile.TemporaryDirectory() as folder:
            first, label = logic.add_to_library(node, folder, result.segmentation)
            second, _ = logic.add_to_library(node, folder, result.segmentation)
            self.assertIsNotNone(label)
            self.assertNotEqual(first, second)
        self.delayDisplay("Test passed")
