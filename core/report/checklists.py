"""Reporting checklists (STARD 2015, CLAIM 2024, TRIPOD+AI) mapped onto the report's sections.

Each item is paraphrased in a few words (the guidelines' full wording is in the papers:
Bossuyt et al., BMJ 2015; Tejani et al., Radiol Artif Intell 2024; Collins et al., BMJ
2024). An item is either answered by a section the report generates from the data, or left
to the author: the checklist table says which, so a researcher sees what is missing.
"""

from __future__ import annotations

import pandas as pd

SECTIONS = {
    "flow": "1. Participant flow",
    "characteristics": "2. Characteristics by subset",
    "accuracy": "3. Diagnostic accuracy",
    "calibration": "3. Diagnostic accuracy (calibration)",
    "decision": "3. Diagnostic accuracy (decision curves)",
    "readers": "4. Readers versus models",
    "subgroups": "5. Subgroups",
    "model-card": "6. Model card",
    "data-sheet": "6. Data sheet",
}
"""Anchor → heading of every section an item may point to."""

STARD_2015: tuple[tuple[str, str, str | None], ...] = (
    ("1", "Title identifies a diagnostic accuracy study", None),
    ("2", "Structured abstract", None),
    ("3", "Scientific and clinical background, intended use", "model-card"),
    ("4", "Objectives and hypotheses", None),
    ("5", "Prospective or retrospective data collection", None),
    ("6", "Eligibility criteria", "data-sheet"),
    ("7", "How eligible participants were identified", None),
    ("8", "Setting, locations and dates of data collection", "data-sheet"),
    ("9", "Consecutive, random or convenience series", None),
    ("10a", "Index test in enough detail to replicate", "model-card"),
    ("10b", "Reference standard in enough detail to replicate", "data-sheet"),
    ("11", "Rationale for choosing the reference standard", None),
    ("12a", "Definition and rationale of the index test's positivity cut-off", "accuracy"),
    ("12b", "Definition of the reference standard's cut-off", "data-sheet"),
    ("13a", "Index test assessors blinded to the reference standard", None),
    ("13b", "Reference standard assessors blinded to the index test", None),
    ("14", "Methods for estimating and comparing accuracy", "accuracy"),
    ("15", "Handling of indeterminate results", None),
    ("16", "Handling of missing data", "data-sheet"),
    ("17", "Analyses of variability (subgroups)", "subgroups"),
    ("18", "Intended sample size and how it was determined", None),
    ("19", "Flow of participants (diagram)", "flow"),
    ("20", "Baseline demographic and clinical characteristics", "characteristics"),
    ("21a", "Severity distribution in those with the target condition", "characteristics"),
    ("21b", "Alternative diagnoses in those without it", None),
    ("22", "Time interval between index test and reference standard", "data-sheet"),
    ("23", "Cross tabulation of index test by reference standard", "flow"),
    ("24", "Estimates of accuracy with their precision", "accuracy"),
    ("25", "Adverse events from the tests", None),
    ("26", "Limitations and sources of bias", "model-card"),
    ("27", "Implications for practice", None),
    ("28", "Registration number and registry", None),
    ("29", "Where the full protocol can be accessed", None),
    ("30", "Sources of funding and role of funders", None),
)

CLAIM_2024: tuple[tuple[str, str, str | None], ...] = (
    ("1", "Title indicates AI methods", None),
    ("2", "Structured abstract", None),
    ("3", "Scientific and clinical background, intended use", "model-card"),
    ("4", "Study objectives and hypotheses", None),
    ("5", "Prospective or retrospective design", None),
    ("6", "Study goal (e.g. model creation, comparison with readers)", "readers"),
    ("7", "Data sources", "data-sheet"),
    ("8", "Eligibility criteria", "data-sheet"),
    ("9", "Data pre-processing", "model-card"),
    ("10", "Selection of data subsets", "flow"),
    ("11", "De-identification methods", "data-sheet"),
    ("12", "Handling of missing data", "data-sheet"),
    ("13", "Image acquisition protocol", None),
    ("14", "Definition of the ground truth (reference standard)", "data-sheet"),
    ("15", "Rationale for the reference standard", None),
    ("16", "Source of ground-truth annotations and annotators' qualifications", None),
    ("17", "Annotation tools and methods", "data-sheet"),
    ("18", "Inter- and intra-rater variability", "readers"),
    ("19", "Sample size", "flow"),
    ("20", "How data were assigned to partitions and their proportions", "flow"),
    ("21", "Level at which partitions are disjoint (patient)", "data-sheet"),
    ("22", "Detailed model description", "model-card"),
    ("23", "Software libraries, frameworks and packages", "model-card"),
    ("24", "Initialization of model parameters", "model-card"),
    ("25", "Training details, hyperparameters and augmentation", "model-card"),
    ("26", "Method of selecting the final model", "model-card"),
    ("27", "Ensembling techniques", None),
    ("28", "Metrics of model performance", "accuracy"),
    ("29", "Statistical measures of significance and uncertainty", "accuracy"),
    ("30", "Robustness or sensitivity analysis", "subgroups"),
    ("31", "Methods for explainability or interpretability", None),
    ("32", "Evaluation on internal data", "accuracy"),
    ("33", "Evaluation on external data", None),
    ("34", "Flow of participants or cases", "flow"),
    ("35", "Demographic and clinical characteristics per partition", "characteristics"),
    ("36", "Performance metrics for the optimal model", "accuracy"),
    ("37", "Estimates of diagnostic accuracy with precision", "accuracy"),
    ("38", "Failure analysis of incorrectly classified cases", None),
    ("39", "Study limitations", "model-card"),
    ("40", "Implications for practice", None),
    ("41", "Registration number and registry", None),
    ("42", "Where the full protocol can be accessed", None),
    ("43", "Where the code and data can be accessed", "model-card"),
    ("44", "Sources of funding and role of funders", None),
)

TRIPOD_AI: tuple[tuple[str, str, str | None], ...] = (
    ("1", "Title: development or evaluation, population, outcome", None),
    ("2", "Abstract (TRIPOD+AI for Abstracts)", None),
    ("3a", "Healthcare context and rationale", "model-card"),
    ("3b", "Target population and intended users", "model-card"),
    ("3c", "Known health inequalities between groups", None),
    ("4", "Objectives", None),
    ("5a", "Sources of data and their representativeness", "data-sheet"),
    ("5b", "Dates of data collection", "data-sheet"),
    ("6a", "Setting, number and location of centres", None),
    ("6b", "Eligibility criteria", "data-sheet"),
    ("6c", "Treatments received, if relevant", None),
    ("7", "Data pre-processing and quality checks", "model-card"),
    ("8a", "Outcome definition, how and when assessed", "data-sheet"),
    ("8b", "Qualifications and blinding of outcome assessors", None),
    ("8c", "Consistency of outcome assessment", None),
    ("9a", "Choice of initial predictors", "model-card"),
    ("9b", "Definition of predictors", "model-card"),
    ("9c", "Qualifications and blinding of predictor assessors", None),
    ("10", "How the study size was arrived at", "flow"),
    ("11", "Handling of missing data", "data-sheet"),
    ("12a", "How the data were used (split into development and evaluation)", "flow"),
    ("12b", "How predictors were handled", "model-card"),
    ("12c", "Model type, building and hyperparameter tuning", "model-card"),
    ("12d", "Heterogeneity across clusters", None),
    ("12e", "Performance measures, including calibration", "calibration"),
    ("12f", "Model updating, if done", None),
    ("12g", "Decision-analytic measures (net benefit)", "decision"),
    ("13", "Handling of class imbalance", "model-card"),
    ("14", "Approaches to assess model fairness", "subgroups"),
    ("15", "Model output and how it is converted to a decision", "accuracy"),
    ("16", "Differences between development and evaluation data", "characteristics"),
    ("17", "Ethics approval and consent", None),
    ("18a", "Funding", None),
    ("18b", "Conflicts of interest", None),
    ("18c", "Protocol", None),
    ("18d", "Registration", None),
    ("18e", "Data availability", None),
    ("18f", "Code availability", "model-card"),
    ("19", "Patient and public involvement", None),
    ("20a", "Flow of participants", "flow"),
    ("20b", "Characteristics overall and per data set", "characteristics"),
    ("20c", "Comparison of development and evaluation data", "characteristics"),
    ("21", "Number of participants and outcome events per analysis", "accuracy"),
    ("22", "Full model or how to access it", "model-card"),
    ("23a", "Performance estimates with confidence intervals", "accuracy"),
    ("23b", "Performance in key subgroups", "subgroups"),
    ("24", "Results of model updating", None),
    ("25", "Interpretation", None),
    ("26", "Limitations", "model-card"),
    ("27a", "Handling of poor-quality or unavailable input data", "data-sheet"),
    ("27b", "User interaction and expertise needed", "model-card"),
    ("27c", "Next steps and generalizability", None),
)

CHECKLISTS = {"STARD 2015": STARD_2015, "CLAIM 2024": CLAIM_2024, "TRIPOD+AI": TRIPOD_AI}


def checklist_table(present: set[str]) -> pd.DataFrame:
    """Every item of the three checklists, answered by a present section or left to the author.

    ``present`` holds the anchors of the sections this report actually contains: an item
    whose section is missing (e.g. no reader grades) is listed as left to the author.
    """
    rows = []
    for name, items in CHECKLISTS.items():
        for number, topic, anchor in items:
            answered = anchor is not None and anchor in present
            rows.append(
                {
                    "checklist": name,
                    "item": number,
                    "topic": topic,
                    "answered by": SECTIONS[anchor] if answered else "left to the author",
                    "anchor": anchor if answered else "",
                }
            )
    return pd.DataFrame(rows)
