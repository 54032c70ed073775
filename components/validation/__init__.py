"""Data validation: the Great Expectations suites in `expectations/` run on events and items before training.

Importing this package is cheap; great_expectations (~6 s) is imported only when `validate` runs.
"""

from components.validation.validator import ValidationReport, raise_for_failures, validate

__all__ = ["ValidationReport", "raise_for_failures", "validate"]
