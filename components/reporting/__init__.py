"""What a run tells the people who scheduled it, where they look: a Markdown report for the Prefect UI."""

from components.reporting.markdown import retrain_markdown

__all__ = ["retrain_markdown"]
