"""Great Expectations' expect_column_values_to_be_in_set for a value set given at run time, which may be a whole
catalog (100,000 item ids).

GE 1.24 rebuilds an expectation's configuration from the pydantic model (`Expectation.configuration` →
`self.dict()`) each time it reads a kwarg, about 110 times per run for this expectation, and pydantic walks the
value set one value at a time each time: 0.17 s per walk at 100,000 ids, ~19 s of a run. This subclass is the same
expectation (the same `column_values.in_set` metric, GE's pandas `isin` on the data, the same results and
renderers); only its `dict()` copies a value set of plain scalars (ids) in one step, which gives the same dict.

Imported by the validator when it runs the suites (it imports great_expectations).
"""

from __future__ import annotations

from great_expectations.expectations import ExpectColumnValuesToBeInSet

_SCALARS = (str, int, float, bool, type(None))  # values pydantic's walk returns as they are


class ExpectColumnValuesToBeInLargeSet(ExpectColumnValuesToBeInSet):
    """expect_column_values_to_be_in_set; `dict()` copies a value set of scalars as one list."""

    def dict(self, *, include=None, exclude=None, **kwargs):
        values = self.__dict__.get("value_set")
        fast = (
            isinstance(values, list)
            and include is None
            and (exclude is None or isinstance(exclude, (set, frozenset)))
            and not kwargs.get("by_alias")
            and not kwargs.get("exclude_unset")
            and not kwargs.get("skip_defaults")
            and (exclude is None or "value_set" not in exclude)
            and set(map(type, values)) <= set(_SCALARS)
        )
        if not fast:
            return super().dict(include=include, exclude=exclude, **kwargs)
        rest = super().dict(exclude={*(exclude or ()), "value_set"}, **kwargs)
        return {key: list(values) if key == "value_set" else rest[key] for key in self.__dict__ if key in rest or key == "value_set"}
