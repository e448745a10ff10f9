"""A minimal stand-in for PythonQt's ``ctk`` module (CTK widgets), built on the ``qt`` stand-in.

Only the classes Slicer's parameterNodeWrapper names in its GUI connectors and those the module's
.ui uses; behaviour as CTK's where the Widget or the connectors depend on it.
"""

from __future__ import annotations

import qt


class ctkCollapsibleButton(qt.QAbstractButton):
    def __init__(self, parent=None) -> None:
        super().__init__("", parent)
        self.collapsed = False


class ctkSliderWidget(qt._ValueWidget):
    """ctkSliderWidget: a double value with range, step and decimals; valueChanged(double)."""


class ctkDoubleSlider(qt._ValueWidget):
    pass


class ctkDoubleSpinBox(qt._ValueWidget):
    pass


class ctkPathLineEdit(qt.QWidget):
    """ctkPathLineEdit: ``currentPath`` (str), ``currentPathChanged(QString)`` on change."""

    Dirs, Files = 0x001, 0x002
    currentPathChanged = qt.signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._path = ""
        self.filters = None

    @property
    def currentPath(self) -> str:
        return self._path

    @currentPath.setter
    def currentPath(self, path: str) -> None:
        if path != self._path:
            self._path = path
            self.currentPathChanged.emit(path)

    def setCurrentPath(self, path: str) -> None:
        self.currentPath = path


class ctkDirectoryButton(qt.QWidget):
    directoryChanged = qt.signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.directory = ""


class ctkComboBox(qt.QComboBox):
    pass


class ctkCheckBox(qt.QCheckBox):
    pass


class ctkCheckablePushButton(qt.QPushButton):
    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(text, parent)
        self.checkBoxControlsButtonToggleState = False


class ctkRangeWidget(qt.QWidget):
    valuesChanged = qt.signal()


class ctkDoubleRangeSlider(ctkRangeWidget):
    pass


class ctkColorPickerButton(qt.QWidget):
    colorChanged = qt.signal()


class ctkMessageBox(qt.QMessageBox):
    """A message box; ``exec_()`` returns the next answer the test queued (``qt.QMessageBoxAnswers``)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.text = ""
