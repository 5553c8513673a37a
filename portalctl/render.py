"""What the client prints: tables, progress lines, and the exit code of an outcome. Pure."""

from __future__ import annotations

from collections.abc import Sequence

# sysexits(3) where the issue did not fix a number.
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_NEEDS_ATTENTION = 3
EXIT_USAGE = 64
EXIT_UNAVAILABLE = 69
EXIT_NO_PERMISSION = 77
EXIT_CONFIG = 78

MIGRATION_FINAL = {
    "succeeded": EXIT_SUCCEEDED,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "needs_attention": EXIT_NEEDS_ATTENTION,
}
BATCH_FINAL = {
    "succeeded": EXIT_SUCCEEDED,
    "partially_failed": EXIT_FAILED,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
}


def exit_code_for_api_status(status: int) -> int:
    """An error answer of the portal: bad input is a usage error, a refusal of rights
    is "no permission", anything else (not found, conflict) a failure."""
    if status == 400:
        return EXIT_USAGE
    if status in (401, 403):
        return EXIT_NO_PERMISSION
    if status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_FAILED


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def bar(percent: float | None, width: int = 24) -> str:
    filled = round(width * max(0.0, min(100.0, percent or 0.0)) / 100)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def migration_line(m: dict) -> str:
    """One line of a migration's progress, as the progress view says it."""
    head = f"#{m['id']} {m['vm_name']} {m['source']} -> {m['destination']}: {m['status']}"
    if m["status"] not in ("migrating", "completing"):
        tail = f" ({m['failure_reason']}: {m['error']})" if m.get("error") else ""
        return head + tail
    parts = [head, bar(m.get("percent")), f"{m.get('percent') or 0:.0f} %"]
    if m.get("phase"):
        parts.append(m["phase"])
    if m.get("data_total_bytes"):
        parts.append(f"{size(m.get('data_processed_bytes'))} of {size(m['data_total_bytes'])}")
    if m.get("throughput_bytes_s"):
        parts.append(f"{size(m['throughput_bytes_s'])}/s")
    if m.get("memory_iteration"):
        parts.append(f"pass {m['memory_iteration']}")
    if m.get("eta_s") is not None:
        parts.append(f"ETA {m['eta_s']} s")
    if m.get("convergence_note"):
        parts.append(m["convergence_note"])
    return "  ".join(parts)


def batch_line(b: dict) -> str:
    progress = b.get("progress") or {}
    counts = ", ".join(f"{k} {v}" for k, v in sorted(progress.items()) if isinstance(v, int) and v)
    return f"batch #{b['id']} ({b['kind']}): {b['status']}" + (f"  [{counts}]" if counts else "")


def migration_summary(m: dict) -> str:
    if m["status"] == "succeeded":
        extra = []
        if m.get("total_time_ms") is not None:
            extra.append(f"{m['total_time_ms'] / 1000:.1f} s")
        if m.get("downtime_ms") is not None:
            extra.append(f"downtime {m['downtime_ms']} ms")
        return f"#{m['id']} {m['vm_name']} now runs on {m['destination']}" + (
            f" ({', '.join(extra)})" if extra else ""
        )
    return migration_line(m)
