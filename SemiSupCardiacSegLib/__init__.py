"""SemiSupCardiacSegLib: Qt-free, Slicer-free library for semi-supervised cardiac MR segmentation.

Data path (one straight line, used by the CLI, Training/train.py and the Slicer module):

    file -> Volume -> model space (canonical axes, model spacing, z-score)
         -> network (sliding window, MC dropout) -> Prediction -> back onto the input grid.
"""

__version__ = "0.1.0"
