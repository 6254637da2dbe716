"""Which leads a study reads: the ``preprocessing.leads`` setting, the names each lead goes by
in real files, and how a reader is told to read several leads.

A study reads one lead (lead II, the paper's) by default; ``preprocessing.leads`` may list
several (``[I, II, V1]``) or say ``all`` (every lead of the standard twelve that all the
labelled records share, in the standard order). Windows then hold one channel per lead, in
the listed order.

Two settings, two meanings, never mixed:

* a reader's catalog option ``lead`` / ``leads`` names the ONE lead a single-lead study
  reads, under every name that lead goes by in that folder (``[II, MLII, ECG II, ECG2]``);
* ``preprocessing.leads`` with several leads makes every reader read exactly those leads,
  each matched by its own names (:func:`lead_aliases`); the catalog's single-lead names are
  then not used.

A one-lead ``preprocessing.leads`` must name the lead the catalog entry reads (it is II by
default on both sides); :func:`reading` refuses a mismatch naming both.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

# The standard 12 leads in their usual order (also Chapman's column order).
STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
# Lead II under the names monitors and databases give it (MIT-BIH says MLII).
LEAD_II_NAMES: tuple[str, ...] = ("II", "MLII", "ECG II", "ECG2", "ECG 2", "Lead II")
# Separator of the lead names in a multi-lead record's ``lead`` field and a window index.
LEAD_SEPARATOR = ","


def normalise_lead_name(name: object) -> str:
    """A lead name compared case- and spacing-insensitively ("  ecg  II" = "ECG II")."""
    return " ".join(str(name).split()).lower() if name is not None else ""


def lead_aliases(lead: str) -> tuple[str, ...]:
    """The names ``lead`` goes by in files: itself, ``Lead X``, ``ECG X`` (and for II the
    monitor names of :data:`LEAD_II_NAMES`)."""
    if normalise_lead_name(lead) in {normalise_lead_name(n) for n in LEAD_II_NAMES}:
        return LEAD_II_NAMES
    return (lead, f"Lead {lead}", f"ECG {lead}")


def _canonical(name: str) -> str:
    for standard in STANDARD_LEADS:
        if normalise_lead_name(standard) == normalise_lead_name(name):
            return standard
    return " ".join(str(name).split())


def parse_leads(setting: Any, where: str = "preprocessing.leads") -> tuple[str, ...] | str:
    """The ``preprocessing.leads`` setting as a tuple of lead names (standard spelling,
    ``avr`` -> ``aVR``), or the string ``"all"``; a clear error for anything else."""
    if isinstance(setting, str):
        if setting.strip().lower() == "all":
            return "all"
        setting = [setting]
    if not isinstance(setting, Sequence) or not setting:
        raise ValueError(f"{where}: expected a non-empty list of lead names or 'all', got {setting!r}")
    leads = []
    for name in setting:
        if not isinstance(name, str) or not name.strip() or LEAD_SEPARATOR in name:
            raise ValueError(f"{where}: {name!r} is not a lead name (a non-empty string without ',')")
        leads.append(_canonical(name))
    duplicates = sorted({lead for lead in leads if leads.count(lead) > 1})
    if duplicates:
        raise ValueError(f"{where}: lead(s) {duplicates} listed twice in {list(setting)}")
    return tuple(leads)


def joined(leads: Sequence[str]) -> str:
    """The ``lead`` field of a record holding ``leads`` (one name, or names joined by ',')."""
    return LEAD_SEPARATOR.join(leads)


def split_leads(lead_field: str) -> tuple[str, ...]:
    """The lead names of a record's (or window index's) ``lead`` field."""
    return tuple(str(lead_field).split(LEAD_SEPARATOR))


def shared_standard_leads(lead_lists: Sequence[Sequence[str]], where: str) -> tuple[str, ...]:
    """The standard leads every record has (by any of their names), in the standard order."""
    shared = [
        lead for lead in STANDARD_LEADS
        if all(
            any(normalise_lead_name(a) in {normalise_lead_name(n) for n in names} for a in lead_aliases(lead))
            for names in lead_lists
        )
    ]
    if not lead_lists or not shared:
        raise ValueError(
            f"{where}: preprocessing.leads is 'all' but the labelled records share none of the "
            f"standard leads {list(STANDARD_LEADS)}"
        )
    return tuple(shared)


def reading(source: Any, leads: Sequence[str]) -> Any:
    """``source`` set up to read ``leads`` (the resolved ``preprocessing.leads``).

    One lead: the source itself, which reads the lead its catalog entry names; that lead
    must be ``leads[0]`` under one of its names, else ValueError naming both. Several leads:
    a copy of the source that reads exactly those, in that order (a record lacking one is
    excluded as ``missing_lead`` naming it). A source without the multi-lead hook
    (``lead_names`` / ``read_leads``) is refused for several leads, naming it.
    """
    leads = tuple(leads)
    names = getattr(source, "lead_names", None)
    if len(leads) == 1:
        if names is not None:
            wanted = {normalise_lead_name(n) for n in lead_aliases(leads[0])} | {normalise_lead_name(leads[0])}
            if not wanted & {normalise_lead_name(n) for n in names}:
                raise ValueError(
                    f"preprocessing.leads is [{leads[0]}] but the catalog entry of {source!r} reads "
                    f"lead {list(names)}: set the entry's lead option or preprocessing.leads to the same lead"
                )
        return source
    if not hasattr(source, "read_leads"):
        raise ValueError(
            f"preprocessing.leads asks for {list(leads)}, but {source!r} reads one lead only"
        )
    configured = copy.copy(source)
    configured.read_leads = leads
    return configured


def shown_channel(leads: Sequence[str]) -> int:
    """The channel a one-lead picture of C-lead windows shows: lead II when the windows hold
    it (the paper's lead), else the first."""
    names = [canonical_lead(lead) for lead in leads]
    return names.index("II") if "II" in names else 0


def canonical_lead(name: str) -> str:
    """A single lead's standard name: "II" for lead II under any of its names, else the
    standard spelling when it is one of the twelve, else the name itself."""
    if normalise_lead_name(name) in {normalise_lead_name(n) for n in LEAD_II_NAMES}:
        return "II"
    return _canonical(name)


def study_leads(setting: tuple[str, ...] | str, source: Any = None, manifest_leads: Any = None) -> tuple[str, ...]:
    """The leads a study's windows hold, in order: the listed ones, or for ``all`` the
    standard leads every labelled record shares, from the labelled ``source`` (at
    ingestion) or from the labelled manifest's ``lead`` column (after it)."""
    if setting != "all":
        return tuple(setting)
    if manifest_leads is not None:
        fields = sorted({str(field) for field in manifest_leads})
        if len(fields) != 1:
            raise ValueError(
                f"preprocessing.leads is 'all' but the labelled manifest holds records of different "
                f"leads {fields}: run `ingestion` again"
            )
        return tuple(canonical_lead(lead) for lead in split_leads(fields[0]))
    if source is None or not hasattr(source, "record_lead_names"):
        raise ValueError(
            f"preprocessing.leads is 'all' but {source!r} cannot list its records' leads; list the leads"
        )
    return shared_standard_leads(source.record_lead_names(), repr(source))
