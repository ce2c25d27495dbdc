"""The charts of `make bench-peers`, drawn with matplotlib (installed by bench/tools.sh into the
harness's venv): throughput bars with each system's range over its runs, and latency percentile
curves at the fixed rate."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Also the order of the bars in a group.
COLORS = {"Kafka": "#30638e", "Kafka, 3 brokers": "#30638e", "Kafka flush.messages=1": "#6c9bc7",
          "NATS": "#00798c", "NATS sync always": "#7fc4cc", "Runnel": "#d1495b", "Runnel, 3 brokers": "#d1495b"}


def bars(ax, groups, title, ylabel, scale=1.0):
    """Grouped bars: one group per workload, one bar per system, the range of its runs as error bars."""
    present = {s for g in groups for s in g[1]}
    labels = [s for s in COLORS if s in present] + sorted(present - set(COLORS))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        xs, ys, lo, hi = [], [], [], []
        for x, (_, systems) in enumerate(groups):
            r = systems.get(label)
            if r is None:
                continue
            y = r["records_per_sec"] * scale
            xs.append(x + (i - (len(labels) - 1) / 2) * width)
            ys.append(y)
            lo.append(y - r["range"][0] * scale)
            hi.append(r["range"][1] * scale - y)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=label, color=COLORS.get(label))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups], fontsize=8)
    # Log scale: the systems differ by up to two orders of magnitude.
    ax.set_yscale("log")
    ax.set_ylabel(ylabel + " (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=7)


def draw(res, img_dir):
    """Writes the PNGs; returns (title, path) of each."""
    drawn = []
    for size in sorted({w["size"] for w in res["produce"]}):
        groups = [(f"{w['producers']} prod.\nacks={w['acks']}", w["systems"])
                  for w in res["produce"] if w["size"] == size]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        bars(ax, groups, f"Produce, {size} B records (median of runs, bars: range)", "M records/s", 1e-6)
        path = os.path.join(img_dir, f"peers-produce-{size}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        drawn.append((f"Produce throughput, {size} B records", path))

    groups = []
    for w in res["produce"]:
        if w["producers"] == 1 and w["acks"] == "all":
            cons = {}
            for label, r in w["systems"].items():
                runs = [x["consume"] for x in r["runs"] if "consume" in x]
                if runs:
                    runs.sort(key=lambda c: c["records_per_sec"])
                    m = dict(runs[len(runs) // 2])
                    m["range"] = (runs[0]["records_per_sec"], runs[-1]["records_per_sec"])
                    cons[label] = m
            groups.append((f"{w['size']} B", cons))
    groups += [(f"RF 3, {w['size']} B\n(produce)", w["systems"]) for w in res["replicated"]]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars(ax, groups, "Consume a backlog, and produce with replication factor 3", "M records/s", 1e-6)
    path = os.path.join(img_dir, "peers-consume-replicated.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    drawn.append(("Consume and replicated produce throughput", path))

    fig, axes = plt.subplots(1, len(res["fixed_rate"]), figsize=(9, 4.5), squeeze=False)
    for ax, w in zip(axes[0], res["fixed_rate"]):
        for label, r in w["systems"].items():
            p = r.get("latency_ms")
            if not p:
                continue
            ax.plot([0.5, 0.99, 0.999], [p["p50"], p["p99"], p["p999"]], marker="o", label=f"{label} (ack)",
                    color=COLORS.get(label))
            if r.get("e2e_latency_ms"):
                e = r["e2e_latency_ms"]
                ax.plot([0.5, 0.99, 0.999], [e["p50"], e["p99"], e["p999"]], marker="s", linestyle="--",
                        label=f"{label} (end to end)", color=COLORS.get(label))
        ax.set_xscale("logit")
        ax.set_xticks([0.5, 0.99, 0.999])
        ax.set_xticklabels(["p50", "p99", "p99.9"])
        ax.set_xlim(0.4, 0.9995)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"{w['size']} B at {w['rate']:,} records/s", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Latency percentiles at a fixed rate (acks=all; NATS: per batch of 500)", fontsize=10)
    fig.tight_layout()
    path = os.path.join(img_dir, "peers-latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    drawn.append(("Latency percentiles at a fixed rate", path))
    return drawn
