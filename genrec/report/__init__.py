"""Holistic comparison of runs: accuracy with spread over seeds, paired significance tests,
beyond-accuracy metrics, accuracy by popularity and history length, and cost.

numpy + pyarrow (+ matplotlib for the plots, optional); no scipy: the tests are implemented in
:mod:`genrec.report.stats`.
"""

from genrec.report.build import Report, ReportOptions, build_report, compute_report
from genrec.report.runs import (
    Evaluation,
    Method,
    ReportInputError,
    RunMismatchError,
    check_comparable,
    read_method,
)
from genrec.report.stats import compare_paired, holm, mean_and_spread, paired_permutation_test, paired_t_test

__all__ = [
    "Evaluation",
    "Method",
    "Report",
    "ReportInputError",
    "ReportOptions",
    "RunMismatchError",
    "build_report",
    "check_comparable",
    "compare_paired",
    "compute_report",
    "holm",
    "mean_and_spread",
    "paired_permutation_test",
    "paired_t_test",
    "read_method",
]
