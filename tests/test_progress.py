"""Progress samples from recorded libvirt job statistics."""

from migrations_app.domain.progress import sample_from_job_stats

# Shapes of virDomainGetJobStats output seen during a real lab migration.
FIRST_PASS = {
    "type": 2,
    "time_elapsed": 800,
    "data_total": 400_000_000,
    "data_processed": 100_000_000,
    "data_remaining": 300_000_000,
    "memory_iteration": 1,
    "memory_dirty_rate": 1000,
    "memory_page_size": 4096,
    "memory_bps": 125_000_000,
    "memory_processed": 100_000_000,
}


def test_first_pass_sample():
    sample = sample_from_job_stats(FIRST_PASS)
    assert sample.percent == 25.0
    assert sample.phase == "transferring_memory"
    assert sample.memory_dirty_rate_bytes_s == 4_096_000
    assert sample.eta_s == 2.4
    assert sample.throughput_bytes_s == 125_000_000


def test_percent_never_goes_back_when_dirty_memory_grows_the_total():
    later = {**FIRST_PASS, "data_total": 600_000_000, "data_remaining": 500_000_000}
    sample = sample_from_job_stats(later, previous_percent=25.0)
    assert sample.percent == 25.0


def test_percent_stays_below_100_until_libvirt_completes():
    done = {**FIRST_PASS, "data_remaining": 0, "memory_iteration": 3}
    sample = sample_from_job_stats(done, previous_percent=80)
    assert sample.percent == 99.9
    assert sample.phase == "converging"


def test_disk_copy_and_postcopy_phases():
    disks = {"disk_total": 100, "disk_remaining": 50, "data_total": 10, "data_remaining": 5}
    assert sample_from_job_stats(disks).phase == "copying_disks"
    assert sample_from_job_stats(FIRST_PASS, postcopy=True).phase == "postcopy"
    assert sample_from_job_stats({}).phase == "setup"
