"""The audit chain's checkpoint in the keystore: a log deleted, cut, rolled back or rewritten is
found at start (real files, a real SQLite store), set aside, and a new epoch begins with one
alert queued; while running, a log removed or cut under the agent is reported once."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.audit import AuditLog
from agent.audit.checkpoint import (
    CHECKPOINT_KEY,
    LOG_ID_NAME,
    LOG_ROW,
    PROBLEMS,
    REPLICA_ROW,
    AuditGuard,
    Checkpoint,
    CheckpointKey,
    Replica,
    open_audit,
    read_checkpoint,
    read_log_id,
)
from agent.store.db import Store
from agent.uplink import meta, outbox
from common.errors import IntegrityError, UnavailableError

KEY = bytes(range(32))
VAULT = "vlt_guard"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A migrated SQLite store of its own."""
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    s.migrate()
    yield s
    s.close()


def _open(folder: Path, store: Store, key: bytes = KEY) -> tuple[AuditLog, AuditGuard]:
    return open_audit(lambda: AuditLog(folder, key), CheckpointKey(key, VAULT), store)


def _run(folder: Path, store: Store, entries: int) -> tuple[int, str]:
    """Open, append ``entries``, checkpoint and close cleanly, like an agent's run."""
    audit, guard = _open(folder, store)
    for n in range(entries):
        audit.append(op="secrets.read", outcome="ok", status=200, target=f"sec_{n}")
        if n % 3 == 0:
            guard.save_sync(audit, store)
    guard.save_sync(audit, store)
    head = audit.head
    audit.close()
    assert guard.state.problem is None, guard.state
    return head


def _stored(store: Store) -> str:
    raw = store.read_sync(read_checkpoint)
    assert raw is not None
    return raw


def _alerts(store: Store) -> list[str]:
    rows = store.read_sync(lambda c: outbox.oldest(c, 100))
    return [r.body["message"] for r in rows if r.kind == outbox.ALERT]


def _started_over(folder: Path, store: Store, problem: str, *, evidence: bool = True) -> None:
    audit, guard = _open(folder, store)
    try:
        assert guard.state.problem == problem
        assert guard.state.to_json()["status"] == "broken"
        assert guard.state.epoch == 2 and audit.head == (0, "")
        assert _alerts(store) == [PROBLEMS[problem]]
        assert store.read_sync(lambda c: meta.get(c, meta.AUDIT_CURSOR)) is None
        assert bool(list(folder.glob("audit-damaged-*"))) is evidence
        audit.append(op="secrets.read", outcome="ok", status=200)
        guard.save_sync(audit, store)
    finally:
        audit.close()
    again, guard = _open(folder, store)  # the new chain is the checkpointed one: quiet
    again.close()
    assert guard.state.problem is None and guard.state.epoch == 2
    assert len(_alerts(store)) == 1


def test_a_clean_log_reopens_quietly_and_the_checkpoint_follows_it(
    tmp_path: Path, store: Store
) -> None:
    folder = tmp_path / "audit"
    head = _run(folder, store, 5)
    assert CheckpointKey(KEY, VAULT).decode(_stored(store)) == Checkpoint(1, *head)
    head = _run(folder, store, 4)
    assert head[0] == 9
    assert _alerts(store) == []


def test_both_files_deleted_is_missing(tmp_path: Path, store: Store) -> None:
    folder = tmp_path / "audit"
    _run(folder, store, 5)
    store.write_sync(lambda c: meta.put(c, meta.AUDIT_CURSOR, {"vault_id": VAULT, "seq": 5}))
    shutil.rmtree(folder)
    _started_over(folder, store, "missing", evidence=False)


def test_a_workers_damaged_log_forgets_only_its_own_chains_cursor(
    tmp_path: Path, store: Store
) -> None:
    # worker k's log is chain k: its damage must not make chain 0 be sent again from the start
    folder, row, own = tmp_path / "audit-w1", "audit.checkpoint:w1", meta.chain_cursor_key(1)

    def open_worker() -> tuple[AuditLog, AuditGuard]:
        return open_audit(
            lambda: AuditLog(folder, KEY), CheckpointKey(KEY, VAULT, row), store, cursor=own
        )

    audit, guard = open_worker()
    audit.append(op="secrets.read", outcome="ok", status=200)
    guard.save_sync(audit, store)
    audit.close()
    chain0, chain1 = {"vault_id": VAULT, "seq": 7}, {"vault_id": VAULT, "epoch": 1, "seq": 1}
    store.write_sync(lambda c: (meta.put(c, meta.AUDIT_CURSOR, chain0), meta.put(c, own, chain1)))
    shutil.rmtree(folder)
    audit, guard = open_worker()
    audit.close()
    assert guard.state.problem == "missing" and guard.state.epoch == 2
    assert store.read_sync(lambda c: meta.get(c, own)) is None
    assert store.read_sync(lambda c: meta.get(c, meta.AUDIT_CURSOR)) == chain0


def test_the_log_alone_deleted_is_missing_and_its_head_kept(tmp_path: Path, store: Store) -> None:
    folder = tmp_path / "audit"
    _run(folder, store, 5)
    (folder / "audit.log").unlink()
    _started_over(folder, store, "missing")


def test_a_cut_log_is_truncated(tmp_path: Path, store: Store) -> None:
    folder = tmp_path / "audit"
    _run(folder, store, 6)
    lines = (folder / "audit.log").read_bytes().splitlines(keepends=True)
    (folder / "audit.log").write_bytes(b"".join(lines[:2]))
    _started_over(folder, store, "truncated")


def test_an_older_copy_of_both_files_is_rolled_back(tmp_path: Path, store: Store) -> None:
    folder, copy = tmp_path / "audit", tmp_path / "copy"
    _run(folder, store, 3)
    shutil.copytree(folder, copy)
    _run(folder, store, 3)
    shutil.rmtree(folder)
    shutil.copytree(copy, folder)
    _started_over(folder, store, "rolled back")


def test_a_copy_restored_and_written_over_is_rolled_back(tmp_path: Path, store: Store) -> None:
    folder, copy = tmp_path / "audit", tmp_path / "copy"
    _run(folder, store, 3)
    shutil.copytree(folder, copy)
    _run(folder, store, 3)
    shutil.rmtree(folder)
    shutil.copytree(copy, folder)
    with AuditLog(folder, KEY) as log:  # the restored chain goes on (an agent run on the copy):
        for _ in range(5):  # as long as before, but another chain
            log.append(op="secrets.list", outcome="ok", status=200)
    _started_over(folder, store, "rolled back")


def test_an_edited_checkpoint_is_reported(tmp_path: Path, store: Store) -> None:
    folder = tmp_path / "audit"
    _run(folder, store, 3)
    raw = json.loads(_stored(store))
    raw["seq"] = 1  # lower it, as if to excuse a cut log
    value = json.dumps(raw)
    store.write_sync(
        lambda c: c.execute("UPDATE kv_meta SET value = ? WHERE key = ?", (value, CHECKPOINT_KEY))
    )
    _started_over(folder, store, "checkpoint")


def test_a_checkpoint_is_bound_to_its_key_and_vault() -> None:
    key = CheckpointKey(KEY, VAULT)
    value = key.encode(Checkpoint(3, 10, "ab" * 32))
    assert key.decode(value) == Checkpoint(3, 10, "ab" * 32)
    others = (
        CheckpointKey(bytes(32), VAULT),
        CheckpointKey(KEY, "vlt_other"),
        CheckpointKey(KEY, VAULT, row="audit.checkpoint:another-replica"),
    )
    for other in others:
        with pytest.raises(IntegrityError):
            other.decode(value)
    with pytest.raises(IntegrityError):
        key.decode("{not json")
    assert "00" not in repr(key) and VAULT in repr(key)


async def test_a_log_removed_or_cut_while_running_is_reported_once(
    tmp_path: Path, store: Store
) -> None:
    folder = tmp_path / "audit"
    audit, guard = _open(folder, store)
    try:
        audit.append(op="secrets.read", outcome="ok", status=200)
        await guard.watch(audit, store)
        assert guard.state.problem is None and _alerts(store) == []
        assert CheckpointKey(KEY, VAULT).decode(_stored(store)).seq == 1
        (folder / "audit.log").unlink()
        await guard.watch(audit, store)
        await guard.watch(audit, store)
        assert guard.state.problem == "removed"
        assert _alerts(store) == [PROBLEMS["removed"]]
    finally:
        audit.close()


async def test_a_log_cut_while_running_is_reported(tmp_path: Path, store: Store) -> None:
    folder = tmp_path / "audit"
    audit, guard = _open(folder, store)
    try:
        for _ in range(3):
            audit.append(op="secrets.read", outcome="ok", status=200)
        with (folder / "audit.log").open("r+b") as f:
            f.truncate(10)
        await guard.watch(audit, store)
        assert guard.state.problem == "removed"
    finally:
        audit.close()


def test_a_log_from_before_checkpoints_is_adopted(tmp_path: Path, store: Store) -> None:
    folder = tmp_path / "audit"
    with AuditLog(folder, KEY) as log:  # an agent version without checkpoints wrote it
        for _ in range(4):
            log.append(op="secrets.read", outcome="ok", status=200)
        head = log.head
    audit, guard = _open(folder, store)
    audit.close()
    assert guard.state.problem is None and guard.state.epoch == 1
    assert CheckpointKey(KEY, VAULT).decode(_stored(store)) == Checkpoint(1, *head)
    assert _alerts(store) == []


# --------------------------------------------------------------------------- replicas


def _open_as(
    name: str, folder: Path, store: Store, legacy: str = CHECKPOINT_KEY
) -> tuple[AuditLog, AuditGuard]:
    return open_audit(
        lambda: AuditLog(folder, KEY), CheckpointKey(KEY, VAULT, legacy), store, Replica(name)
    )


def _run_as(name: str, folder: Path, store: Store, entries: int) -> AuditGuard:
    audit, guard = _open_as(name, folder, store)
    try:
        for _ in range(entries):
            audit.append(op="secrets.read", outcome="ok", status=200)
        guard.save_sync(audit, store)
    finally:
        audit.close()
    return guard


def test_replicas_on_one_store_each_check_their_own_log(tmp_path: Path, store: Store) -> None:
    folders = {name: tmp_path / name for name in ("vault-0", "vault-1", "vault-2")}
    for round_ in range(3):  # interleaved runs of different lengths: no replica sees another's
        for i, (name, folder) in enumerate(folders.items()):
            guard = _run_as(name, folder, store, 2 + i + round_)
            assert guard.state.problem is None and guard.state.epoch == 1
    ids = {read_log_id(f, CheckpointKey(KEY, VAULT)) for f in folders.values()}
    assert len(ids) == 3 and None not in ids
    rows = store.read_sync(lambda c: c.execute("SELECT key FROM kv_meta").scalars().all())
    assert sorted(r for r in rows if r.startswith(LOG_ROW)) == sorted(LOG_ROW + i for i in ids)
    assert len([r for r in rows if r.startswith(REPLICA_ROW)]) == 3
    assert _alerts(store) == []


def test_a_wiped_replica_folder_is_its_log_missing_and_others_stay_quiet(
    tmp_path: Path, store: Store
) -> None:
    a, b = tmp_path / "vault-0", tmp_path / "vault-1"
    _run_as("vault-0", a, store, 4)
    _run_as("vault-1", b, store, 3)
    shutil.rmtree(b)  # pod vault-1's volume wiped (its id file with it)
    audit, guard = _open_as("vault-1", b, store)
    audit.close()
    assert guard.state.problem == "missing" and guard.state.epoch == 2
    assert _alerts(store) == [PROBLEMS["missing"]]
    assert _run_as("vault-0", a, store, 1).state.problem is None
    assert _run_as("vault-1", b, store, 1).state.problem is None  # the new chain: quiet
    assert len(_alerts(store)) == 1


def test_another_replicas_folder_in_place_of_ones_own_is_replaced(
    tmp_path: Path, store: Store
) -> None:
    a, b = tmp_path / "vault-0", tmp_path / "vault-1"
    _run_as("vault-0", a, store, 4)
    _run_as("vault-1", b, store, 3)
    shutil.rmtree(b)
    shutil.copytree(a, b)  # vault-1's log deleted, a copy of vault-0's put in its place
    audit, guard = _open_as("vault-1", b, store)
    audit.close()
    assert guard.state.problem == "replaced" and guard.state.epoch == 2
    assert list(b.glob("audit-damaged-*/audit.id"))  # the copy is kept aside as evidence
    assert _run_as("vault-0", a, store, 1).state.problem is None
    assert _alerts(store) == [PROBLEMS["replaced"]]


def test_a_lost_identity_file_is_rebuilt_and_an_edited_one_is_reported(
    tmp_path: Path, store: Store
) -> None:
    folder = tmp_path / "vault-0"
    _run_as("vault-0", folder, store, 3)
    first = (folder / LOG_ID_NAME).read_text()
    (folder / LOG_ID_NAME).unlink()  # the log is where the replica's checkpoint says: quiet
    assert _run_as("vault-0", folder, store, 1).state.problem is None
    assert (folder / LOG_ID_NAME).read_text() == first
    doc = json.loads(first)
    doc["log"] = "0" * 32
    (folder / LOG_ID_NAME).write_text(json.dumps(doc))
    audit, guard = _open_as("vault-0", folder, store)
    audit.close()
    assert guard.state.problem == "identity" and _alerts(store) == [PROBLEMS["identity"]]


def test_a_new_replica_name_starts_a_new_log_quietly(tmp_path: Path, store: Store) -> None:
    _run_as("vault-0", tmp_path / "a", store, 3)
    guard = _run_as("vault-3", tmp_path / "d", store, 1)  # scaled up: a new pod, a new log id
    assert guard.state.problem is None and guard.state.epoch == 1
    assert _alerts(store) == []


def test_an_older_versions_per_host_checkpoint_is_adopted_once(
    tmp_path: Path, store: Store
) -> None:
    folder, legacy = tmp_path / "vault-0", "audit.checkpoint:host:0123456789abcdef"
    old = open_audit(lambda: AuditLog(folder, KEY), CheckpointKey(KEY, VAULT, legacy), store)
    audit, guard = old
    for _ in range(3):
        audit.append(op="secrets.read", outcome="ok", status=200)
    guard.save_sync(audit, store)
    audit.close()
    audit, guard = _open_as("vault-0", folder, store, legacy)  # the upgrade: checked, moved
    audit.close()
    assert guard.state.problem is None and guard.key.row.startswith(LOG_ROW)
    assert store.read_sync(lambda c: read_checkpoint(c, legacy)) is None
    assert guard.key.decode(store.read_sync(lambda c: read_checkpoint(c, guard.key.row))).seq == 3


def test_an_older_versions_checkpoint_still_catches_a_rolled_back_log(
    tmp_path: Path, store: Store
) -> None:
    folder, copy, legacy = tmp_path / "vault-0", tmp_path / "copy", "audit.checkpoint:host:ab"
    for entries in (2, 3):
        audit, guard = open_audit(
            lambda: AuditLog(folder, KEY), CheckpointKey(KEY, VAULT, legacy), store
        )
        for _ in range(entries):
            audit.append(op="secrets.read", outcome="ok", status=200)
        guard.save_sync(audit, store)
        audit.close()
        if not copy.exists():
            shutil.copytree(folder, copy)
    shutil.rmtree(folder)
    shutil.copytree(copy, folder)
    audit, guard = _open_as("vault-0", folder, store, legacy)
    audit.close()
    assert guard.state.problem == "rolled back"


def test_an_identity_file_that_cannot_be_written_is_a_clear_error(
    tmp_path: Path, store: Store
) -> None:
    folder = tmp_path / "vault-0"
    (folder / "audit.id.tmp").mkdir(parents=True)  # in the way of the atomic write
    with pytest.raises(UnavailableError, match=r"audit\.id cannot be written.*not full"):
        _open_as("vault-0", folder, store)
    (folder / "audit.id.tmp").rmdir()  # fixed: the store already names the log, all is quiet
    assert _run_as("vault-0", folder, store, 1).state.problem is None
    assert read_log_id(folder, CheckpointKey(KEY, VAULT)) is not None
    assert _alerts(store) == []
