"""The CONSORT 2025 checklist: where the report answers each item, and what it cannot supply.

Items the data answer point to the report's section. Items about the trial's conduct that no
data file holds (design, eligibility, randomisation, blinding, sample size, ...) say so, to be
answered in the manuscript. The open-science items (registration, protocol and statistical
analysis plan, data sharing, code, funding) are filled from the trial description when it
gives them (``registration:``, ``protocol:``, ``sap:``, ``data_sharing:``, ``code:``,
``funding:``) and marked as missing otherwise.
"""

from __future__ import annotations

import pandas as pd

from trialflow.config import TrialConfig
from trialflow.tables import ci_label

__all__ = ["checklist"]

MANUSCRIPT = "not supplied by the data: state it in the manuscript"
# (section, item, where in this report); None: an open-science key of the trial description;
# {ci}: the confidence level the trial's alpha gives (e.g. 95% CI).
_ITEMS: tuple[tuple[str, str, str | None], ...] = (
    ("Title and abstract", "Identification as a randomised trial; structured abstract",
     MANUSCRIPT),
    ("Open science", "Trial registration (registry and number)", "registration"),
    ("Open science", "Where the protocol can be accessed", "protocol"),
    ("Open science", "Where the statistical analysis plan can be accessed", "sap"),
    ("Open science", "Where the de-identified participant data can be accessed", "data_sharing"),
    ("Open science", "Where the statistical code can be accessed", "code"),
    ("Open science", "Funding and the role of funders; conflicts of interest", "funding"),
    ("Introduction", "Background, rationale and objectives", MANUSCRIPT),
    ("Methods", "Patient and public involvement", MANUSCRIPT),
    ("Methods", "Trial design, allocation ratio; changes after commencement", MANUSCRIPT),
    ("Methods", "Settings, eligibility criteria, interventions and comparator", MANUSCRIPT),
    ("Methods", "Outcomes: measures, units and time points",
     "1. Trial summary (outcomes, units, visits)"),
    ("Methods", "Harms: how they were defined and assessed", MANUSCRIPT),
    ("Methods", "Sample size", MANUSCRIPT),
    ("Methods", "Randomisation: sequence, concealment, implementation", MANUSCRIPT),
    ("Methods", "Blinding", MANUSCRIPT),
    ("Methods", "Statistical methods for the outcomes",
     "12. Methods and results text; 4-5 (model under each table)"),
    ("Methods", "Handling of missing data; additional analyses",
     "9. Estimand and sensitivity analyses; 8. Supportive analyses"),
    ("Results", "Participant flow (diagram) with numbers randomised, receiving treatment and "
     "analysed", "2. Participant flow (CONSORT diagram, numbers analysed)"),
    ("Results", "Losses and exclusions after randomisation, with reasons",
     "2. Participant flow (withdrawals by visit and reason; exclusions from analysis)"),
    ("Results", "Dates of recruitment and follow-up", MANUSCRIPT),
    ("Results", "Baseline data by arm", "3. Baseline characteristics (Table 1)"),
    ("Results", "Numbers analysed in each analysis",
     "2. Numbers analysed; n in every table and sentence"),
    ("Results", "Outcomes and estimation: effect sizes with precision",
     "4. Primary outcome; 5. Secondary outcomes (difference, {ci}, p)"),
    ("Results", "Harms: all important harms in each arm", MANUSCRIPT),
    ("Results", "Ancillary analyses (subgroups, sensitivity)",
     "8. Supportive analyses; 9. Estimand and sensitivity analyses"),
    ("Discussion", "Interpretation, limitations, generalisability", MANUSCRIPT),
)  # fmt: skip
KEYS = ("registration", "protocol", "sap", "data_sharing", "code", "funding")


def checklist(trial: TrialConfig, *, harms: bool = False) -> pd.DataFrame:
    """The checklist as a table: section, item, where it is (or why it is not)."""
    rows = []
    for section, item, where in _ITEMS:
        if where in KEYS:
            given = trial.raw.get(where)
            text = (
                f"given in the trial description: {given}"
                if given
                else f"missing: add {where}: to the trial description"
            )
        elif harms and item.startswith("Harms: all"):
            text = "6. Harms (tables/adverse_events.csv)"
        else:
            text = str(where).format(ci=ci_label(trial.options["alpha"]))
        if text[:1].isdigit():
            text = f"Section {text}"
        rows.append({"section": section, "item": item, "where in this report": text})
    return pd.DataFrame(rows)
