"""Python packages the library needs beyond torch, and which of them are missing (no imports done).

What a stock 3D Slicer bundles (read in github:Slicer/Slicer at tags v5.6.2, v5.8.1 and v5.10.0:
``SuperBuild/External_python-numpy.cmake``, ``External_python-scipy.cmake``,
``External_SimpleITK.cmake`` with ``-DWRAP_PYTHON:BOOL=ON``, and the ``External_python-*-requirements.cmake``
requirement lists; the Python version is ``Slicer_REQUIRED_PYTHON_VERSION`` in
``SuperBuild/External_python.cmake``):

=========  ============  ============  =============
Slicer     5.6.2         5.8.1         5.10.0
=========  ============  ============  =============
Python     3.9.10        3.9.10        3.12.10
numpy      1.26.1        1.26.4        2.0.2
scipy      1.11.3        1.13.1        1.13.1
SimpleITK  yes (built)   yes (built)   yes (built)
=========  ============  ============  =============

plus pip, setuptools, wheel, packaging, pyparsing, six, requests (certifi, idna, urllib3,
charset-normalizer), pydicom, pillow, dicomweb-client, retrying, GitPython, couchdb, chardet.
None of them bundles h5py, tqdm, matplotlib or torch (torch comes from the SlicerPyTorch extension,
so it is not listed here).

``REQUIRED``: imported by ``segment`` and training whatever the input; all three are bundled by Slicer.
``OPTIONAL``: imported only for one feature, with a one-line error (or a plain fallback) otherwise:

* h5py: reading or writing ``.h5`` cases (the LA2018 / ACDC challenge files);
* tqdm: progress bars (a plain progress printout without it);
* matplotlib: ``segment --montage`` and the plots of the benchmarks.

The Slicer module calls ``missing_packages()`` and offers ``slicer.util.pip_install`` for the result.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Iterable

from .errors import MissingPackageError

# import name -> pip requirement
REQUIRED: dict = {"numpy": "numpy", "scipy": "scipy", "SimpleITK": "SimpleITK"}
OPTIONAL: dict = {"h5py": "h5py", "tqdm": "tqdm", "matplotlib": "matplotlib"}
# import name -> what needs it (for messages)
PURPOSE: dict = {"h5py": ".h5 cases", "tqdm": "progress bars", "matplotlib": "montages and plots"}


def _requirement(name: str) -> str:
    return REQUIRED.get(name) or OPTIONAL.get(name) or name


def is_available(name: str) -> bool:
    """Whether ``import name`` would find the module (``importlib.util.find_spec``; nothing is imported
    for a top-level name; a name set to None in ``sys.modules`` counts as missing)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing, or a broken __spec__
        return False


def missing_packages(names: Iterable[str] | None = None) -> list[str]:
    """Pip requirement strings of the packages among ``names`` (default: ``REQUIRED``) that are not
    importable, in the order given. Import names known here map to their pip requirement
    (``REQUIRED``/``OPTIONAL``); other names are returned as they are."""
    names = list(REQUIRED) if names is None else list(names)
    return [_requirement(n) for n in names if not is_available(n)]


def install_hint(name: str) -> str:
    """``pip install X; in Slicer: slicer.util.pip_install('X')`` for import name ``name``."""
    req = _requirement(name)
    return f"pip install {req}; in Slicer: slicer.util.pip_install('{req}')"


def import_optional(name: str, needed_for: str):
    """Import and return module ``name``, or raise ``MissingPackageError`` (an ``InputError`` and an
    ``ImportError``): ``<needed_for> needs the <name> package (pip install <name>; in Slicer: ...)``."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingPackageError(f"{needed_for} needs the {name} package ({install_hint(name)})") from None
