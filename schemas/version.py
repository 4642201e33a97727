"""The tuneplan version: defined here once; pyproject.toml reads it (``[tool.setuptools.dynamic]``).

A constant, not ``importlib.metadata``, because every plan records it and importing the metadata
machinery costs the advise path tens of milliseconds.
"""

VERSION = "0.1.0"
