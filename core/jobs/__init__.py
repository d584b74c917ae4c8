"""File-level jobs: read rasters with GDAL, call the numpy science, write rasters atomically.

Each job is what one Processing algorithm (or CLI) runs; it takes paths and plain parameters, a
:class:`core.progress.Progress`, and raises ``ValueError`` subclasses with messages naming the
layer and the problem.
"""
