"""Rhythm simulator that makes the project's bundled default data.

A sum-of-Gaussians beat model (McSharry et al., 2003) on a 3-D cardiac dipole, with beat
timelines that follow textbook criteria for each of the Chapman release's eleven rhythms and
recording artefacts per electrode. See docs/synthetic_data.md.
"""

from ecg_transfer.signals.synthetic.releases import (
    CHAPMAN_RHYTHM_COUNTS,
    DIAGNOSTICS_COLUMNS,
    MONITOR_RHYTHM_SHARES,
    SyntheticChapmanRelease,
    SyntheticMonitorCorpus,
    allocate_class_counts,
    simulate_chapman_release,
    simulate_monitor_corpus,
)
from ecg_transfer.signals.synthetic.rhythms import SYNTHETIC_RHYTHMS, simulate_rhythm

__all__ = [
    "CHAPMAN_RHYTHM_COUNTS",
    "DIAGNOSTICS_COLUMNS",
    "MONITOR_RHYTHM_SHARES",
    "SYNTHETIC_RHYTHMS",
    "SyntheticChapmanRelease",
    "SyntheticMonitorCorpus",
    "allocate_class_counts",
    "simulate_chapman_release",
    "simulate_monitor_corpus",
    "simulate_rhythm",
]
