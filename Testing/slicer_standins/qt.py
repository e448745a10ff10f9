"""A minimal stand-in for PythonQt's ``qt`` module: only what the module's .ui, Widget and Slicer's
own Python layers (ScriptedLoadableModule, parameterNodeWrapper, slicer.util) touch.

Qt itself cannot run here (no PythonQt/CTK on PyPI); everything else in the Widget tests is real.
These classes hold state and emit signals synchronously, as Qt does for direct connections:
setting ``value``/``text``/``currentIndex`` emits the change signal only when the value changes.
Timers do not run by themselves: ``QTimer.fire_due()`` (called by the harness's ``processEvents``)
fires every active timer once, which is how a test lets the event loop turn.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET


class Signal:
    """A Qt signal: ``connect(slot)``, ``disconnect(slot)``, ``emit(*args)``."""

    def __init__(self) -> None:
        self._slots: list = []

    def connect(self, slot) -> None:
        self._slots.append(slot)

    def disconnect(self, slot=None) -> None:
        if slot is None:
            self._slots.clear()
        elif slot in self._slots:
            self._slots.remove(slot)
        else:
            raise TypeError("disconnect(): slot was not connected")  # as PythonQt

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            n = _arity(slot)
            slot(*(args if n is None else args[:n]))  # PythonQt drops arguments a slot does not take

    @property
    def count(self) -> int:
        return len(self._slots)


def _arity(slot) -> int | None:
    """How many positional arguments ``slot`` takes (None: any number)."""
    import inspect

    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it everything
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class _SignalDescriptor:
    """Class attribute that gives each instance its own Signal (like Qt's per-object signals)."""

    def __set_name__(self, owner, name):
        self.name = "_signal_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        sig = obj.__dict__.get(self.name)
        if sig is None:
            sig = obj.__dict__[self.name] = Signal()
        return sig


def signal() -> _SignalDescriptor:
    return _SignalDescriptor()


class Qt:
    WaitCursor = 3
    Vertical = 2
    Horizontal = 1
    ShiftModifier = 0x02000000


class QObject:
    destroyed = signal()

    def __init__(self, parent=None) -> None:
        self._children: list = []
        self._parent = None
        self._properties: dict = {}
        self.name = ""
        if parent is not None:
            self.setParent(parent)

    # objectName is 'name' in PythonQt
    @property
    def objectName(self) -> str:
        return self.name

    def setObjectName(self, name: str) -> None:
        self.name = name

    def setParent(self, parent) -> None:
        if self._parent is not None:
            self._parent._children.remove(self)
        self._parent = parent
        if parent is not None:
            parent._children.append(self)

    def parent(self):
        return self._parent

    def children(self) -> list:
        return list(self._children)

    def findChildren(self, cls=None) -> list:
        found = []
        for child in self._children:
            if cls is None or isinstance(child, cls):
                found.append(child)
            found.extend(child.findChildren(cls))
        return found

    def setProperty(self, name: str, value) -> None:
        self._properties[name] = value

    def property(self, name: str):
        if name in self._properties:
            return self._properties[name]
        return None

    def isWidgetType(self) -> bool:
        return False

    def className(self) -> str:
        return type(self).__name__

    def connect(self, signature: str, slot) -> None:
        """PythonQt's ``obj.connect('clicked(bool)', slot)``."""
        getattr(self, signature.split("(")[0]).connect(slot)

    def disconnect(self, signature: str, slot) -> None:
        getattr(self, signature.split("(")[0]).disconnect(slot)

    def deleteLater(self) -> None:
        self.setParent(None)
        self.destroyed.emit()


class QWidget(QObject):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.enabled = True
        self.visible = False
        self.toolTip = ""
        self._layout = None

    def isWidgetType(self) -> bool:
        return True

    def setLayout(self, layout) -> None:
        self._layout = layout
        layout._owner = self

    def layout(self):
        return self._layout

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def setEnabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def setToolTip(self, text: str) -> None:
        self.toolTip = text


class _Layout(QObject):
    def __init__(self, parent=None) -> None:
        super().__init__()
        self._owner = None
        if isinstance(parent, QWidget):
            parent.setLayout(self)

    def addWidget(self, widget, *args) -> None:
        if self._owner is not None:
            widget.setParent(self._owner)

    def addRow(self, *items) -> None:
        for item in items:
            if isinstance(item, QWidget):
                self.addWidget(item)

    def addLayout(self, layout, *args) -> None:
        pass

    def addStretch(self, *args) -> None:
        pass


class QVBoxLayout(_Layout):
    pass


class QHBoxLayout(_Layout):
    pass


class QFormLayout(_Layout):
    pass


class QGridLayout(_Layout):
    pass


class _ValueWidget(QWidget):
    """A widget whose ``value`` property emits ``valueChanged(value)`` on change, clamped to its range."""

    valueChanged = signal()
    _integer = False

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._minimum, self._maximum, self._value = (0, 99, 0) if self._integer else (0.0, 99.99, 0.0)
        self.singleStep = 1
        self.decimals = 2

    def _clamp(self, v):
        v = int(v) if self._integer else float(v)
        return min(max(v, self._minimum), self._maximum)

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, v) -> None:
        v = self._clamp(v)
        if v != self._value:
            self._value = v
            self.valueChanged.emit(v)

    def setValue(self, v) -> None:
        self.value = v

    @property
    def minimum(self):
        return self._minimum

    @minimum.setter
    def minimum(self, v) -> None:
        self._minimum = v
        self._maximum = max(self._maximum, v)
        self.value = self._value

    @property
    def maximum(self):
        return self._maximum

    @maximum.setter
    def maximum(self, v) -> None:
        self._maximum = v
        self._minimum = min(self._minimum, v)
        self.value = self._value

    def setMinimum(self, v) -> None:
        self.minimum = v

    def setMaximum(self, v) -> None:
        self.maximum = v

    def setRange(self, lo, hi) -> None:
        self._minimum, self._maximum = lo, hi
        self.value = self._value


class QSpinBox(_ValueWidget):
    _integer = True


class QSlider(_ValueWidget):
    _integer = True


class QDoubleSpinBox(_ValueWidget):
    pass


class QProgressBar(_ValueWidget):
    _integer = True

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._maximum = 100


class QAbstractButton(QWidget):
    clicked = signal()
    toggled = signal()

    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(parent)
        self.text = text
        self.checkable = False
        self._checked = False

    @property
    def checked(self) -> bool:
        return self._checked

    @checked.setter
    def checked(self, v: bool) -> None:
        if bool(v) != self._checked:
            self._checked = bool(v)
            self.toggled.emit(self._checked)

    def click(self) -> None:
        """What a user's click does: nothing when disabled, else clicked(checked)."""
        if not self.enabled:
            return
        if self.checkable:
            self.checked = not self.checked
        self.clicked.emit(self.checked)


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(text, parent)
        self.checkable = True


class QLabel(QWidget):
    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(parent)
        self.text = text
        self.wordWrap = False


class QLineEdit(QWidget):
    textChanged = signal()
    editingFinished = signal()

    def __init__(self, text: str = "", parent=None) -> None:
        super().__init__(parent)
        self._text = text

    @property
    def text(self) -> str:
        return self._text

    @text.setter
    def text(self, v: str) -> None:
        if v != self._text:
            self._text = v
            self.textChanged.emit(v)

    def setText(self, v: str) -> None:
        self.text = v


class QTextEdit(QWidget):
    textChanged = signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.plainText = ""


class QComboBox(QWidget):
    currentIndexChanged = signal()
    currentTextChanged = signal()
    activated = signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._items: list[str] = []
        self._index = -1

    @property
    def count(self) -> int:
        return len(self._items)

    def addItem(self, text: str, *args) -> None:
        self._items.append(str(text))
        if self._index < 0:
            self.currentIndex = 0

    def itemText(self, index: int) -> str:
        return self._items[index] if 0 <= index < len(self._items) else ""

    def findText(self, text: str) -> int:
        return self._items.index(text) if text in self._items else -1

    def clear(self) -> None:
        self._items.clear()
        self.currentIndex = -1

    @property
    def currentIndex(self) -> int:
        return self._index

    @currentIndex.setter
    def currentIndex(self, i: int) -> None:
        i = int(i) if -1 <= int(i) < len(self._items) else -1
        if i != self._index:
            self._index = i
            self.currentIndexChanged.emit(i)
            self.currentTextChanged.emit(self.currentText)

    def setCurrentIndex(self, i: int) -> None:
        self.currentIndex = i

    @property
    def currentText(self) -> str:
        return self.itemText(self._index)

    def activate(self, index: int) -> None:
        """What a user's pick in the list does: select, then activated(index)."""
        self.currentIndex = index
        self.activated.emit(index)


class QIcon:
    def __init__(self, path: str = "") -> None:
        self.path = path


class QColor:
    def __init__(self, *args) -> None:
        self.args = args

    def name(self, *args) -> str:
        return str(self.args[0]) if self.args else "#000000"


class QSettings:
    """Application settings, kept in memory for the test session (``QSettings.store``)."""

    store: dict = {}

    def value(self, key: str, default=None):
        return self.store.get(key, default)

    def setValue(self, key: str, value) -> None:
        self.store[key] = value

    def contains(self, key: str) -> bool:
        return key in self.store

    def remove(self, key: str) -> None:
        self.store.pop(key, None)


class QTimer(QObject):
    """A timer that fires when the harness turns the event loop (``fire_due``)."""

    timeout = signal()
    active_timers: list = []

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.interval = 0
        self.singleShot_ = False

    def start(self, interval_ms: int | None = None) -> None:
        if interval_ms is not None:
            self.interval = int(interval_ms)
        if self not in QTimer.active_timers:
            QTimer.active_timers.append(self)

    def stop(self) -> None:
        if self in QTimer.active_timers:
            QTimer.active_timers.remove(self)

    def isActive(self) -> bool:
        return self in QTimer.active_timers

    def setInterval(self, ms: int) -> None:
        self.interval = int(ms)

    def setSingleShot(self, single: bool) -> None:
        self.singleShot_ = bool(single)

    @staticmethod
    def singleShot(ms: int, callback) -> None:
        t = QTimer()
        t.singleShot_ = True
        t.timeout.connect(callback)
        t.start(ms)

    @classmethod
    def fire_due(cls) -> int:
        """Fire every active timer once (single-shot ones stop first); returns how many fired."""
        timers = list(cls.active_timers)
        for t in timers:
            if t.singleShot_:
                t.stop()
            t.timeout.emit()
        return len(timers)


class QMessageBox(QWidget):
    Ok, Cancel, Yes, No, Retry, Close, NoButton = 0x400, 0x400000, 0x4000, 0x10000, 0x80000, 0x200000, 0
    Information, Warning, Critical, Question = 1, 2, 3, 4


class QMessageBoxAnswers:
    """The user's answers to the message boxes to come (the test says what is clicked)."""

    pending: list = []


def _exec_message_box(box) -> int:
    if not QMessageBoxAnswers.pending:
        raise RuntimeError(f"a message box asked the user ({getattr(box, 'text', '')!r}) and the test gave no answer")
    return QMessageBoxAnswers.pending.pop(0)


QMessageBox.exec_ = _exec_message_box


class QCursor:
    def __init__(self, shape=0) -> None:
        self._shape = shape

    def shape(self):
        return self._shape


class QApplication:
    _cursors: list = []

    @staticmethod
    def setOverrideCursor(cursor) -> None:
        QApplication._cursors.append(cursor if isinstance(cursor, QCursor) else QCursor(cursor))

    @staticmethod
    def restoreOverrideCursor() -> None:
        if QApplication._cursors:
            QApplication._cursors.pop()

    @staticmethod
    def overrideCursor():
        return QApplication._cursors[-1] if QApplication._cursors else None


class QFile:
    ReadOnly = 1

    def __init__(self, path: str) -> None:
        self.path = str(path)

    def exists(self) -> bool:
        return os.path.isfile(self.path)

    def open(self, mode) -> bool:
        return self.exists()

    def close(self) -> None:
        pass


class QUiLoader:
    """Builds the widget tree of a Qt Designer .ui file from the stand-in classes: class names are
    looked up in ``qt``, ``ctk`` and ``slicer`` (so a class the stand-ins lack fails loudly), standard
    properties are set as attributes, dynamic ones (``stdset="0"``) with ``setProperty``, combo-box
    items added, and ``<connections>`` wired (signal of the sender to the receiver's slot)."""

    def load(self, qfile: QFile):
        root = ET.parse(qfile.path).getroot()
        top = root.find("widget")
        by_name: dict = {}
        widget = self._build(top, None, by_name)
        for c in root.iter("connection"):
            sender, receiver = by_name[c.findtext("sender")], by_name[c.findtext("receiver")]
            slot = getattr(receiver, c.findtext("slot").split("(")[0])
            sender.connect(c.findtext("signal"), slot)
        return widget

    def _build(self, element, parent, by_name: dict):
        cls = _widget_class(element.get("class"))
        w = cls()
        w.setObjectName(element.get("name"))
        by_name[w.name] = w
        if parent is not None:
            w.setParent(parent)
        for prop in element.findall("property"):
            value = _property_value(prop)
            if prop.get("stdset") == "0":
                w.setProperty(prop.get("name"), value)
            else:
                setattr(w, prop.get("name"), value)
        for item in element.findall("item"):  # QComboBox items
            text = item.find("property/string")
            w.addItem(text.text if text is not None and text.text else "")
        for child in _child_widgets(element):
            self._build(child, w, by_name)
        return w


def _child_widgets(element):
    """Widgets nested in ``element`` directly or through layouts and items."""
    for sub in element:
        if sub.tag == "widget":
            yield sub
        elif sub.tag in ("layout", "item"):
            yield from _child_widgets(sub)


def _widget_class(name: str):
    import sys

    for module_name in ("qt", "ctk", "slicer"):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, name):
            return getattr(module, name)
    raise RuntimeError(f"the Qt stand-ins have no widget class {name!r} (used by the .ui)")


def _property_value(prop):
    v = prop[0]
    if v.tag == "string":
        return v.text or ""
    if v.tag == "bool":
        return v.text == "true"
    if v.tag == "number":
        return int(v.text)
    if v.tag == "double":
        return float(v.text)
    if v.tag == "stringlist":
        return [s.text or "" for s in v.findall("string")]
    return v.text  # enum, set: the symbolic text
