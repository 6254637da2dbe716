"""The bundled data pipeline: only the simulation, tagged, written with the synthetic marker
that tells ingestion (and so the report) that the data are simulated."""

from __future__ import annotations

import json

import pytest

from ecg_transfer.pipelines.bundled_data.nodes import BundledDataConfig
from ecg_transfer.pipelines.bundled_data.pipeline import create_pipeline
from ecg_transfer.pipelines.ingestion.pipeline import create_pipeline as ingestion
from ecg_transfer.signals.records import SYNTHETIC_MARKER
from tests.pipelines.conftest import shrunk_parameters


def test_bundled_data_is_only_the_simulation_and_ingestion_only_reads():
    bundled = create_pipeline()
    assert {n.name for n in bundled.nodes} == {"simulate_labelled_release", "simulate_unlabelled_corpus"}
    assert bundled.all_outputs() == {"labelled_recordings", "unlabelled_recordings"}
    assert all(n.tags == {"bundled_data"} for n in bundled.nodes)
    scan = ingestion()
    assert not {n.name for n in scan.nodes} & {n.name for n in bundled.nodes}
    assert all(n.tags == {"ingestion"} for n in scan.nodes)
    assert {"labelled_recordings", "unlabelled_recordings"} <= scan.inputs()


def test_bundled_folders_carry_the_synthetic_marker(tiny_raw_data):
    params = shrunk_parameters()["bundled_data"]
    labelled = json.loads((tiny_raw_data / "data/01_raw/chapman_shaoxing" / SYNTHETIC_MARKER).read_text())
    unlabelled = json.loads((tiny_raw_data / "data/01_raw/unlabelled_recordings" / SYNTHETIC_MARKER).read_text())
    assert labelled["n_records"] == params["labelled"]["n_records"]
    assert unlabelled["n_records"] == params["unlabelled"]["n_patients"]


def test_parameters_become_one_typed_config():
    params = shrunk_parameters()["bundled_data"]
    config = BundledDataConfig.from_params(params)
    assert config.labelled.n_records == 66 and config.unlabelled.sampling_rates == (250.0, 500.0)
    with pytest.raises(ValueError, match=r"bundled_data.labelled: unknown parameter\(s\) \['n_record'\]"):
        BundledDataConfig.from_params({**params, "labelled": {"n_record": 5, "min_per_class": 1}})
