"""Runs the scripted module as Slicer does, through Slicer's own Python layers, on a real MRML scene.

Real: slicer-core's MRML scene and logics (``slicer.vtk*``), slicer-core's ``slicer.util``, and
Slicer's ``ScriptedLoadableModule``, ``i18n`` and ``parameterNodeWrapper`` of a release tag from
``../shared/slicer/<tag>/Base/Python/slicer`` (put on ``slicer.__path__``), and Slicer's colour
tables read from that tag's ColorFiles. Stood in for: Qt only (``Testing/slicer_standins``: the
``qt`` and ``ctk`` modules and the Qt-based ``slicer.q*`` widgets and ``slicer.app``), because
PythonQt and CTK do not exist outside a Slicer build.

``SlicerSession(tag)`` sets this up; ``session.load_module()`` loads ``SemiSupCardiacSeg.py`` the
way Slicer's scripted-module factory does (``importlib.util.spec_from_file_location``, registered in
``sys.modules``, then executed), creates the module object with its parent, the widget with a
parent panel, and calls ``setup()``; ``session.process_events()`` turns the event loop (timers).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SLICER_LAYERS = REPO.parent / "shared" / "slicer"
TAGS = ("v5.6.2", "v5.10.0")
MODULE_FILE = REPO / "SemiSupCardiacSeg" / "SemiSupCardiacSeg.py"
STANDINS = Path(__file__).resolve().parent / "slicer_standins"
#: Colour tables the module refers to, read from the tag's ColorFiles as Slicer's Colors module does.
COLOR_FILES = ("Inferno.txt", "DivergingBlueRed.txt", "GenericAnatomyColors.txt")
#: Modules re-imported for each tag: Slicer's layers, and the module file (which subclasses them).
#: The library and the Qt-free scene Logic package (SemiSupCardiacSegSceneLogic) are not tag-dependent
#: and stay (re-importing them would give other tests' imports different class objects, e.g. two
#: InputError classes).
_PURGED_PREFIXES = ("slicer.ScriptedLoadableModule", "slicer.i18n", "slicer.parameterNodeWrapper")
_PURGED_NAMES = ("SemiSupCardiacSeg",)


def _load_standin(name: str):
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__file__", "").startswith(str(STANDINS)):
        return module
    spec = importlib.util.spec_from_file_location(name, STANDINS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _mrml_widget_classes(qt):
    """The Qt-based MRML widgets (``slicer.qMRML*``) the .ui and the parameterNodeWrapper name."""

    class qMRMLWidget(qt.QWidget):
        mrmlSceneChanged = qt.signal()

        def __init__(self, parent=None) -> None:
            super().__init__(parent)
            self._scene = None

        def setMRMLScene(self, scene) -> None:
            self._scene = scene
            self.mrmlSceneChanged.emit(scene)

        def mrmlScene(self):
            return self._scene

    class qMRMLNodeComboBox(qMRMLWidget):
        """Node selector: ``currentNode()``, ``setCurrentNode(node)`` emitting
        ``currentNodeChanged(node)`` on change; ``nodes()`` lists the scene's nodes of its types."""

        currentNodeChanged = qt.signal()

        def __init__(self, parent=None) -> None:
            super().__init__(parent)
            self.nodeTypes = []
            self.noneEnabled = False
            self.addEnabled = True
            self.removeEnabled = True
            self.showChildNodeTypes = True
            self._node = None

        def currentNode(self):
            return self._node

        @property
        def currentNodeID(self):
            return self._node.GetID() if self._node is not None else None

        def setCurrentNode(self, node) -> None:
            """As qMRMLNodeComboBox: a node that is not in its scene selects nothing."""
            if node is not None and (self._scene is None or self._scene.GetNodeByID(node.GetID()) is not node):
                node = None
            if node is not self._node:
                self._node = node
                self.currentNodeChanged.emit(node)

        def nodes(self) -> list:
            if self._scene is None:
                return []
            found = []
            for cls in self.nodeTypes:
                for i in range(self._scene.GetNumberOfNodesByClass(cls)):
                    n = self._scene.GetNthNodeByClass(i, cls)
                    if self.showChildNodeTypes or n.GetClassName() == cls:
                        found.append(n)
            return found

    class qMRMLSliderWidget(qt._ValueWidget):
        pass

    class qMRMLSpinBox(qt._ValueWidget):
        pass

    class qMRMLRangeWidget(qt.QWidget):
        valuesChanged = qt.signal()

    class qSlicerWidget(qMRMLWidget):
        pass

    return {
        c.__name__: c
        for c in (qMRMLWidget, qMRMLNodeComboBox, qMRMLSliderWidget, qMRMLSpinBox, qMRMLRangeWidget, qSlicerWidget)
    }


class _ModuleManager:
    def __init__(self, qt) -> None:
        class _Manager(qt.QObject):
            moduleAboutToBeUnloaded = qt.signal()

        self._q = _Manager()

    def connect(self, signature, slot) -> None:
        self._q.connect(signature, slot)

    def disconnect(self, signature, slot) -> None:
        self._q.disconnect(signature, slot)

    def unload(self, module_name: str) -> None:
        """What Slicer does when a module is unloaded (and at application exit)."""
        self._q.moduleAboutToBeUnloaded.emit(module_name)


class _App:
    """``slicer.app``: the Qt application's few calls the module and Slicer's layers make. The
    application logic is slicer-core's real ``vtkSlicerApplicationLogic``."""

    applicationName = "Slicer"

    def __init__(self, qt, application_logic) -> None:
        self._qt = qt
        self._application_logic = application_logic
        self._module_manager = _ModuleManager(qt)
        self.testing = True  # Slicer --testing: message boxes are skipped, confirmations answer OK

    def applicationLogic(self):
        return self._application_logic

    def moduleManager(self):
        return self._module_manager

    def testingEnabled(self) -> bool:
        return self.testing

    def translate(self, context, text):
        return text

    def processEvents(self) -> None:
        self._qt.QTimer.fire_due()

    def setOverrideCursor(self, cursor) -> None:
        self._qt.QApplication.setOverrideCursor(cursor)

    def restoreOverrideCursor(self) -> None:
        self._qt.QApplication.restoreOverrideCursor()

    def topLevelWidgets(self) -> list:
        return []  # no main window: Slicer's message helpers fall back to parentless boxes

    def userSettings(self):
        return self._qt.QSettings()

    def settings(self):
        return self._qt.QSettings()

    def applicationFilePath(self) -> str:
        return sys.executable


class _ModuleRepresentation:
    """``slicer.modules.<name>``: the C++ module object as Python sees it (``path``, ``logic()``,
    ``widgetRepresentation()``), and the ``parent`` handed to the scripted module's constructor."""

    def __init__(self, path: str = "", logic=None) -> None:
        self.path = path
        self._logic = logic
        self.widget = None
        self.title = ""
        self.categories: list = []
        self.dependencies: list = []
        self.contributors: list = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.icon = None

    def logic(self):
        return self._logic

    def widgetRepresentation(self):
        return self.widget


class SlicerSession:
    """One Slicer 'application' for one tag: real scene and logics, the tag's Python layers."""

    def __init__(self, tag: str) -> None:
        layers = SLICER_LAYERS / tag / "Base" / "Python" / "slicer"
        if not layers.is_dir():
            raise FileNotFoundError(f"Slicer's Python layers of {tag} not found at {layers}")
        self.tag = tag
        self.qt = _load_standin("qt")
        self.ctk = _load_standin("ctk")
        self.qt.QSettings.store = {}
        self.qt.QTimer.active_timers = []
        self.qt.QMessageBoxAnswers.pending = []
        self.qt.QApplication._cursors = []
        import slicer  # slicer-core

        self.slicer = slicer
        for name in [n for n in sys.modules if n.startswith(_PURGED_PREFIXES) or n in _PURGED_NAMES]:
            del sys.modules[name]
        slicer.__path__[:] = [p for p in slicer.__path__ if str(SLICER_LAYERS) not in p] + [str(layers)]
        for name, cls in _mrml_widget_classes(self.qt).items():
            setattr(slicer, name, cls)

        from SemiSupCardiacSegSceneLogic import headless_slicer  # noqa: PLC0415  (module folder on sys.path)

        color_files = SLICER_LAYERS / tag / "Base" / "Logic" / "Resources" / "ColorFiles"
        core = headless_slicer(color_files=color_files)  # Slicer's Colors logic reads the tag's tables
        self.core = core
        self.scene = core.scene
        layout = self.scene.AddNode(slicer.vtkMRMLLayoutNode())  # what Slicer's layout manager creates
        self.layout_logic = slicer.vtkMRMLLayoutLogic()
        self.layout_logic.SetMRMLScene(self.scene)
        layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        self.layout_node = layout
        for name in COLOR_FILES:
            if self.scene.GetNodeByID(f"vtkMRMLColorTableNodeFile{name}") is None:
                raise RuntimeError(f"Slicer's colour table {name} of {tag} was not loaded from {color_files}")
        slicer.mrmlScene = self.scene
        slicer.app = _App(self.qt, core.application_logic)
        slicer.modules = types.SimpleNamespace(
            segmentations=_ModuleRepresentation(logic=core.segmentations_logic),
            semisupcardiacseg=_ModuleRepresentation(path=str(MODULE_FILE)),
        )
        slicer.selfTests = {}
        self.module = None
        self.widget = None
        self.module_file_module = None

    def load_module(self, setup: bool = True):
        """Load SemiSupCardiacSeg.py as Slicer does and build its widget; returns the widget."""
        spec = importlib.util.spec_from_file_location("SemiSupCardiacSeg", MODULE_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules["SemiSupCardiacSeg"] = module
        spec.loader.exec_module(module)
        self.module_file_module = module
        parent = self.slicer.modules.semisupcardiacseg
        self.module = module.SemiSupCardiacSeg(parent)
        panel = self.slicer.qMRMLWidget()
        panel.setLayout(self.qt.QVBoxLayout())
        panel.setMRMLScene(self.scene)
        panel.isEntered = False
        self.widget = module.SemiSupCardiacSegWidget(panel)
        parent.widget = self.widget
        if setup:
            self.widget.setup()
        return self.widget

    def enter(self) -> None:
        self.widget.parent.isEntered = True
        self.widget.enter()

    def exit(self) -> None:
        self.widget.parent.isEntered = False
        self.widget.exit()

    def close_scene(self) -> None:
        """File > Close scene: Slicer's scene Clear, with its Start/EndCloseEvent."""
        self.scene.Clear(0)

    def unload_module(self) -> None:
        self.slicer.app.moduleManager().unload("SemiSupCardiacSeg")

    def process_events(self) -> None:
        self.slicer.app.processEvents()

    def wait_until(self, condition, timeout_s: float = 120.0, poll_s: float = 0.1) -> bool:
        """Turn the event loop until ``condition()`` holds (True) or ``timeout_s`` passes (False)."""
        import time

        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self.process_events()
            if condition():
                return True
            time.sleep(poll_s)
        return False
