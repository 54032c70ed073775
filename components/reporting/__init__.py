"""What a run tells the people who scheduled it, where they look: a Markdown report for the Prefect UI."""

from components.reporting.markdown import ADD_ITEMS_ARTIFACT_KEY, RETRAIN_ARTIFACT_KEY, add_items_markdown, publish, retrain_markdown, send_logs_to_prefect

__all__ = ["ADD_ITEMS_ARTIFACT_KEY", "RETRAIN_ARTIFACT_KEY", "add_items_markdown", "publish", "retrain_markdown", "send_logs_to_prefect"]
