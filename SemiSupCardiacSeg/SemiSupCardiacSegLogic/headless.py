"""A headless Slicer core from the ``slicer-core`` PyPI package: what the Slicer application would
set up for the module's Logic, without the GUI (tests, the README demo, scripts).

Inside Slicer use ``slicer.mrmlScene`` and the modules' own logics instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HeadlessSlicer:
    """An MRML scene with the application, volumes, colors and segmentations logics attached."""

    scene: object  # vtkMRMLScene
    application_logic: object  # vtkSlicerApplicationLogic
    volumes_logic: object  # vtkSlicerVolumesLogic
    colors_logic: object  # vtkSlicerColorLogic (built-in tables; the file-based ones need Slicer's ColorFiles)
    segmentations_logic: object  # vtkSlicerSegmentationsModuleLogic

    def logic(self):
        """The module's Logic working on this scene."""
        from .logic import SemiSupCardiacSegLogic  # noqa: PLC0415

        return SemiSupCardiacSegLogic(self.scene, self.segmentations_logic)


def headless_slicer() -> HeadlessSlicer:
    """Scene + logics wired as the Slicer application wires them (``slicer-core`` must be installed)."""
    try:
        import slicer  # noqa: PLC0415
    except ImportError as e:
        raise ImportError("the headless Slicer core needs the slicer-core package: pip install slicer-core") from e
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    logics = []
    for cls in (slicer.vtkSlicerVolumesLogic, slicer.vtkSlicerColorLogic, slicer.vtkSlicerSegmentationsModuleLogic):
        logic = cls()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)  # the colors logic adds its built-in tables here
        logics.append(logic)
    return HeadlessSlicer(scene, app, *logics)
