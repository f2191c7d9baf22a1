"""Draws the soak's CSV (tests/it/soak.rs) as one PNG: memory, open files and tasks, database
connections, and check latency, per minute, for both replicas."""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    minutes = [float(r["elapsed_s"]) / 60 for r in rows]

    def series(name: str) -> list[float]:
        return [float(r[name]) for r in rows]

    fig, axes = plt.subplots(4, 1, figsize=(10, 12), sharex=True)
    memory, files, database, latency = axes
    memory.plot(minutes, series("rss_a_mib"), label="replica A")
    memory.plot(minutes, series("rss_b_mib"), label="replica B")
    memory.set_ylabel("RSS (MiB)")
    memory.set_ylim(bottom=0)
    files.plot(minutes, series("fds_a"), label="open files, A")
    files.plot(minutes, series("fds_b"), label="open files, B")
    files.plot(minutes, series("tasks_a"), label="runtime tasks, A", linestyle="--")
    files.plot(minutes, series("tasks_b"), label="runtime tasks, B", linestyle="--")
    files.set_ylabel("count")
    files.set_ylim(bottom=0)
    database.plot(minutes, series("db_connections"), label="PostgreSQL connections (both)")
    database.plot(minutes, series("pool_in_use_a"), label="pool in use, A")
    database.plot(minutes, series("pool_in_use_b"), label="pool in use, B")
    database.set_ylabel("connections")
    database.set_ylim(bottom=0)
    latency.plot(minutes, series("p50_ms"), label="p50")
    latency.plot(minutes, series("p99_ms"), label="p99")
    latency.set_ylabel("cached check through Envoy (ms)")
    latency.set_ylim(bottom=0)
    latency.set_xlabel("minutes")
    wrong = int(series("wrong_allows")[-1]) if rows else 0
    checks = int(sum(series("checks")))
    fig.suptitle(f"gatehouse soak: {checks:,} checks, {wrong} wrong allows")
    for axis in axes:
        axis.grid(True, alpha=0.3)
        axis.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(target, dpi=80)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
