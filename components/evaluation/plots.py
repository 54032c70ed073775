"""Charts people would rather look at than read: the learning curve and the metric comparison."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def learning_curve(curve: list[dict], path: Path, popularity_ndcg: float | None = None, others: dict[str, list[dict]] | None = None) -> Path:
    """Training loss and validation NDCG@10 per epoch: the model's, and those of `others` (name -> curve,
    e.g. the id-only baseline), with popularity's test NDCG@10 as a reference line."""
    plt = _pyplot()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, rows in {"model": curve, **(others or {})}.items():
        epochs = [row["epoch"] for row in rows]
        ax_loss.plot(epochs, [row["loss"] for row in rows], marker="o", ms=3, label=name)
        ax_val.plot(epochs, [row["val_NDCG@10"] for row in rows], marker="o", ms=3, label=f"{name} (validation)")
    ax_loss.set(title="training loss (full cross-entropy)", xlabel="epoch", ylabel="loss")
    if others:
        ax_loss.legend(loc="upper right")
    if popularity_ndcg is not None:
        ax_val.axhline(popularity_ndcg, color="grey", ls="--", label="popularity (test)")
    ax_val.set(title="validation NDCG@10", xlabel="epoch", ylabel="NDCG@10")
    ax_val.legend(loc="lower right")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metric_bars(results: dict[str, dict], path: Path, metrics: tuple[str, ...] = ("HR@10", "NDCG@10", "HR@20", "NDCG@20"), split: str = "leave_one_out") -> Path:
    """Grouped bars: one group per metric, one bar per ranker (model, popularity, champion …)."""
    plt = _pyplot()
    names = [n for n, m in results.items() if m]
    shown = [m for m in metrics if all(m in results[n] for n in names)]
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(shown))]
        bars = ax.bar(xs, [results[name][m] for m in shown], width, label=name.replace("_", "-"))
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(shown))], shown)
    ax.set(title=f"test metrics (full ranking, {split.replace('_', '-')} split)", ylabel="value")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
