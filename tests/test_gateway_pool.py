"""The gateway's long-lived connections (`gateway.pooled`), on libvirt's own test driver
(test:///default: a real libvirt connection, no host). Their bounds on frozen and cut
hosts are proven on lab hosts by tests/test_fault_matrix.py and tests/test_lab_faults.py."""

from __future__ import annotations

import os
import threading

import pytest

from hosts import gateway

URI = "test:///default"


@pytest.fixture(autouse=True)
def empty_pool():
    gateway.pool_forget()
    yield
    gateway.pool_forget()


def raw(handle: gateway.HostConnection):
    return handle._conn


def test_a_second_use_gets_the_same_open_connection():
    with gateway.pooled(URI, timeout=5) as first:
        first_conn = raw(first)
        assert first.list_domains()
    with gateway.pooled(URI, timeout=5) as second:
        assert raw(second) is first_conn
    assert gateway.pool_size() == 1
    assert first_conn.isAlive()  # left open for the next use


def test_other_credentials_retire_the_old_connection():
    with gateway.pooled(URI, timeout=5, generation="key-1") as old:
        old_conn = raw(old)
    with gateway.pooled(URI, timeout=5, generation="key-2") as new:
        assert raw(new) is not old_conn
        assert new.list_domains()
    assert gateway.pool_size() == 1
    assert not gateway.is_alive(old_conn)  # closed when the new credentials were asked for


def test_an_unreachable_host_error_drops_the_connection():
    with pytest.raises(gateway.HostUnreachable):
        with gateway.pooled(URI, timeout=5) as conn:
            dropped = raw(conn)
            raise gateway.HostUnreachable("the call broke")
    assert gateway.pool_size() == 0
    with gateway.pooled(URI, timeout=5) as conn:
        assert raw(conn) is not dropped


def test_a_connection_marked_broken_is_not_given_out_again():
    with gateway.pooled(URI, timeout=5) as conn:
        broken = raw(conn)
        conn.mark_broken()
    with gateway.pooled(URI, timeout=5) as conn:
        assert raw(conn) is not broken


def test_a_dead_connection_is_reopened():
    with gateway.pooled(URI, timeout=5) as conn:
        dead = raw(conn)
    dead.close()  # what keepalive does to a connection whose host stopped answering
    with gateway.pooled(URI, timeout=5) as conn:
        assert raw(conn) is not dead
        assert conn.list_domains()


def test_a_forgotten_connection_in_use_is_closed_only_when_given_back():
    with gateway.pooled(URI, timeout=5) as conn:
        gateway.pool_forget(URI)  # e.g. the host's address changed, mid-call elsewhere
        assert conn.list_domains()  # still usable by whoever holds it
        held = raw(conn)
    assert gateway.pool_size() == 0
    assert not gateway.is_alive(held)


def test_concurrent_users_never_share_a_connection():
    """libvirt 9.0: a call made on a connection while another thread is blocked in
    migrateToURI3 on it never returned once keepalive closed that connection. So a
    connection is lent to one user at a time."""
    with gateway.pooled(URI, timeout=5) as first:
        with gateway.pooled(URI, timeout=5) as second:
            with gateway.pooled(URI, timeout=5) as third:
                conns = [raw(first), raw(second), raw(third)]
                assert len({id(c) for c in conns}) == 3
    # At most POOL_MAX_IDLE (2: the migration call and its monitor) are kept.
    assert gateway.pool_size() == gateway.POOL_MAX_IDLE
    assert sum(gateway.is_alive(c) for c in conns) == gateway.POOL_MAX_IDLE
    with gateway.pooled(URI, timeout=5) as again:
        assert raw(again) in conns


def test_threads_each_get_their_own_connection():
    seen, errors = [], []
    barrier = threading.Barrier(4)

    def use() -> None:
        try:
            with gateway.pooled(URI, timeout=5) as conn:
                seen.append(raw(conn))
                barrier.wait(10)  # all four hold one at the same time
                conn.list_domains()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors
    assert len({id(c) for c in seen}) == 4
    assert gateway.pool_size() == gateway.POOL_MAX_IDLE


def test_other_keepalive_settings_open_a_new_connection(monkeypatch):
    with gateway.pooled(URI, timeout=5) as conn:
        before = raw(conn)
    monkeypatch.setattr(gateway.session, "KEEPALIVE_INTERVAL_S", 1)
    with gateway.pooled(URI, timeout=5) as conn:
        assert raw(conn) is not before


def test_a_forked_child_starts_with_an_empty_pool_and_the_parent_keeps_its_own():
    with gateway.pooled(URI, timeout=5) as conn:
        conn.list_domains()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it sees, exit without cleanup
        try:
            os.write(write, str(gateway.pool_size()).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_saw = os.read(read, 16).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child_saw == "0"
    # Idle connections are closed before a fork (none is inherited); the parent
    # opens a new one at its next use.
    with gateway.pooled(URI, timeout=5) as conn:
        assert conn.list_domains()
    assert gateway.pool_size() == 1
