"""Project pipelines: each folder under ``pipelines/`` registers itself.

- ``starvation`` (also ``__default__``): the whole study, bundled data included.
- ``bundled_data``: only the generation of the offline default data.
- ``study``: ``starvation`` without the bundled data, for real data (``--env=paper``).
"""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    # `kedro run --pipeline=X` makes find_pipelines load only X, so __default__ is set only
    # when the whole study was loaded.
    pipelines = find_pipelines(raise_errors=True)
    if "starvation" in pipelines:
        pipelines["__default__"] = pipelines["starvation"]
    return pipelines
