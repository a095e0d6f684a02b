"""Build of the optional compiled core (``asynclens._core``); the rest of the build is in pyproject.toml.

The extension is optional: when it cannot be built the install goes on, and
asynclens runs its pure-Python implementation (see ``asynclens/_native.py``)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("asynclens._core", ["asynclens/_core.c"], optional=True)])
