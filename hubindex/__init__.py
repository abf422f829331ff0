"""hubindex: a plugin-based indexer of public model hubs."""

from hubindex.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
