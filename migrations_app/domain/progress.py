"""Turning libvirt job statistics into progress samples (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass

from migrations_app.domain.lifecycle import Phase

DEFAULT_PAGE_SIZE = 4096


@dataclass(frozen=True)
class ProgressSample:
    phase: Phase
    percent: float
    elapsed_ms: int
    data_total_bytes: int | None
    data_processed_bytes: int | None
    data_remaining_bytes: int | None
    memory_dirty_rate_bytes_s: int | None
    memory_iteration: int | None
    throughput_bytes_s: int | None
    # Copied disks (storage "copy"): None when the job copies none.
    disk_total_bytes: int | None
    disk_processed_bytes: int | None
    disk_remaining_bytes: int | None
    eta_s: float | None


def phase_of(stats: dict, *, postcopy: bool = False) -> Phase:
    if postcopy:
        return Phase.POSTCOPY
    disk_remaining = stats.get("disk_remaining") or 0
    if stats.get("disk_total") and disk_remaining > 0 and not stats.get("memory_processed"):
        return Phase.COPYING_DISKS
    iteration = stats.get("memory_iteration") or 0
    if iteration <= 1:
        return Phase.TRANSFERRING_MEMORY if stats.get("data_processed") else Phase.SETUP
    return Phase.CONVERGING


def disk_progress(stats: dict) -> dict[str, int | None]:
    """The copied disks' figures; all None when the job copies none (disk_total 0)."""
    copied = bool(stats.get("disk_total"))
    return {
        f"disk_{key}_bytes": stats.get(f"disk_{key}") if copied else None
        for key in ("total", "processed", "remaining")
    }


def sample_from_job_stats(
    stats: dict, *, previous_percent: float = 0.0, postcopy: bool = False
) -> ProgressSample:
    """One sample from `virDomainGetJobStats`; the percent never falls, and stays under 100."""
    total = stats.get("data_total")
    remaining = stats.get("data_remaining")
    raw = 100.0 * (total - remaining) / total if total and remaining is not None else 0.0
    percent = min(99.9, max(previous_percent, raw))
    page_size = stats.get("memory_page_size") or DEFAULT_PAGE_SIZE
    dirty_pages = stats.get("memory_dirty_rate")
    throughput = None
    if "memory_bps" in stats or "disk_bps" in stats:
        throughput = (stats.get("memory_bps") or 0) + (stats.get("disk_bps") or 0)
    eta = remaining / throughput if throughput and remaining is not None else None
    return ProgressSample(
        phase=phase_of(stats, postcopy=postcopy),
        percent=round(percent, 2),
        elapsed_ms=int(stats.get("time_elapsed") or 0),
        data_total_bytes=total,
        data_processed_bytes=stats.get("data_processed"),
        data_remaining_bytes=remaining,
        memory_dirty_rate_bytes_s=dirty_pages * page_size if dirty_pages is not None else None,
        memory_iteration=stats.get("memory_iteration"),
        throughput_bytes_s=throughput,
        **disk_progress(stats),
        eta_s=round(eta, 1) if eta is not None else None,
    )


def completed_fields(stats: dict) -> dict:
    """The record's final figures from libvirt's completed-job statistics."""
    if not stats:
        return {}
    return {
        "completed_stats": stats,
        "total_time_ms": stats.get("time_elapsed"),
        "downtime_ms": stats.get("downtime"),
        "setup_time_ms": stats.get("setup_time"),
        "transferred_bytes": stats.get("data_processed"),
        **{k: v for k, v in disk_progress(stats).items() if v is not None},
    }
