"""Charts people would rather look at than read: the learning curve, the metric comparison and the
metrics by target slice."""

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
    names = [n for n, m in results.items() if m]
    shown = [m for m in metrics if all(m in results[n] for n in names)]
    return _grouped_bars({n: [results[n][m] for m in shown] for n in names}, shown, f"test metrics (full ranking, {split.replace('_', '-')} split)", "value", path)


def slice_bars(slices: dict[str, dict], path: Path, metric: str = "HR@10") -> Path:
    """HR@10 by the target's slice (components/evaluation/slices.py), one bar per ranker: where each
    ranker wins and loses — new items (cold start) against known ones (warm), the long tail against the
    head."""
    labels, heights = slice_bar_values(slices, metric)
    return _grouped_bars(heights, labels, f"test {metric} by target (full ranking)", metric, path)


def slice_bar_values(slices: dict[str, dict], metric: str = "HR@10") -> tuple[list[str], dict[str, list[float]]]:
    """(x labels, ranker -> bar heights) of `slice_bars`: the slices every ranker has (a slice without
    test cases is left out of the results, so of the chart), each label with its number of cases."""
    names = [n for n, by_slice in slices.items() if by_slice]
    shown = [s for s in dict.fromkeys(s for n in names for s in slices[n]) if all(s in slices[n] for n in names)]
    labels = [f"{s.replace('_', ' ')}\n({slices[names[0]][s]['cases']} cases)" for s in shown]
    return labels, {n: [slices[n][s][metric] for s in shown] for n in names}


def _grouped_bars(values: dict[str, list[float]], groups: list[str], title: str, ylabel: str, path: Path) -> Path:
    """One group of bars per entry of `groups`, one bar per key of `values` (its values in group order)."""
    plt = _pyplot()
    width = 0.8 / max(len(values), 1)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for i, (name, heights) in enumerate(values.items()):
        bars = ax.bar([j + i * width for j in range(len(groups))], heights, width, label=name.replace("_", "-"))
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks([j + width * (len(values) - 1) / 2 for j in range(len(groups))], groups)
    ax.set(title=title, ylabel=ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
