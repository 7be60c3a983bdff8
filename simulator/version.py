"""The installed package's version (a checkout that was never installed says so)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ehrsim")
except PackageNotFoundError:
    __version__ = "0.0.0+checkout"
