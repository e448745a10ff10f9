"""A headless Slicer core from the ``slicer-core`` PyPI package: what the Slicer application would
set up for the module's Logic, without the GUI (tests, the README demo, scripts).

Inside Slicer use ``slicer.mrmlScene`` and the modules' own logics instead.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .logic import SceneLogic


@dataclass
class HeadlessSlicer:
    """An MRML scene with the application, volumes, colors and segmentations logics attached."""

    scene: object  # vtkMRMLScene
    application_logic: object  # vtkSlicerApplicationLogic
    volumes_logic: object  # vtkSlicerVolumesLogic
    colors_logic: object  # vtkSlicerColorLogic (built-in tables; the file-based ones need Slicer's ColorFiles)
    segmentations_logic: object  # vtkSlicerSegmentationsModuleLogic
    home: object = field(default=None, repr=False)  # the temporary home folder, when one was made

    def logic(self) -> SceneLogic:
        """The module's scene Logic working on this scene.

        The Logic keeps this object alive: the colors logic removes its default colour tables from
        the scene when it is deleted (vtkMRMLColorLogic's destructor), and labelmap display nodes
        made later would then warn that their 'vtkMRMLColorTableNodeLabels' cannot be found.
        """
        logic = SceneLogic(self.scene, self.segmentations_logic)
        logic._headless = self
        return logic


def headless_slicer(color_files: str | Path | None = None) -> HeadlessSlicer:
    """Scene + logics wired as the Slicer application wires them (``slicer-core`` must be installed).

    color_files: a folder named ``ColorFiles`` holding Slicer's colour table files (e.g. Slicer's
    Base/Logic/Resources/ColorFiles); its tables are added with Slicer's node IDs
    ('vtkMRMLColorTableNodeFile' + file name). Without it the scene has only the built-in tables.
    The colors logic reads ``<home>/<share>/ColorFiles`` of the application logic, which the Slicer
    application sets to its install tree; here home/share point at ``color_files`` or, when None, at
    an empty temporary folder (an unset home makes the colors logic log an error).
    """
    try:
        import slicer  # noqa: PLC0415
    except ImportError as e:
        raise ImportError("the headless Slicer core needs the slicer-core package: pip install slicer-core") from e
    home = None
    if color_files is None:
        home = tempfile.TemporaryDirectory(prefix="SemiSupCardiacSeg-home-")
        color_files = Path(home.name) / "share" / "ColorFiles"
        color_files.mkdir(parents=True)
    color_files = Path(color_files).resolve()
    if color_files.name != "ColorFiles" or not color_files.is_dir():
        raise ValueError(f"color_files must be an existing folder named ColorFiles, got {color_files}")
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetHomeDirectory(str(color_files.parent.parent))
    app.SetShareDirectory(color_files.parent.name)
    app.SetMRMLScene(scene)
    logics = []
    for cls in (slicer.vtkSlicerVolumesLogic, slicer.vtkSlicerColorLogic, slicer.vtkSlicerSegmentationsModuleLogic):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)  # the colors logic adds its built-in tables here
        logics.append(logic)
    return HeadlessSlicer(scene, app, *logics, home=home)
