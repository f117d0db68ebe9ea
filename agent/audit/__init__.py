"""The agent's local audit log: append-only, hash-chained with a keyed MAC, never a secret value.

One folder holds two files:

* ``audit.log`` -- JSON lines, one entry per API request, allowed or denied::

      {"actor":...,"extra":{...},"op":...,"outcome":...,"prev":"<hex>","remote":...,
       "request_id":...,"seq":N,"status":...,"target":...,"time":"...+00:00","mac":"<hex>"}

  ``mac = HMAC-SHA256(key, prev + "\\n" + canonical JSON of the entry without "mac")``, where
  ``prev`` is the previous entry's mac (``""`` for seq 1) and canonical JSON is
  ``json.dumps(obj, sort_keys=True, separators=(",", ":"))``. A line is exactly that text with
  ``"mac"`` added last, so every byte of it is covered. The key comes from the caller (derived
  from the vault master key): whoever edits the file cannot recompute the chain.
* ``audit.head`` -- one fixed-length record naming the latest entry, ``{seq, mac}``, with its
  own ``HMAC(key, "head\\n" + seq + "\\n" + mac)``, rewritten in place: after every append
  outside an event loop, and once per loop turn inside one (the agent's server), however many
  entries the turn appended (at most ``MAX_HEAD_LAG`` = 64 behind). A log whose tail was cut
  off no longer reaches its head.

Crashes: each line is written with one ``write`` before its request is answered, and the head
after it, so a process killed in between leaves the log ahead of its head by the entries since
the last head write (one, or up to ``MAX_HEAD_LAG`` inside an event loop) -- the allowance
``verify`` makes, and :meth:`AuditLog.open` brings the head forward only when those entries
verify and chain back to the entry the head names. A kill during the line's own write can leave
a torn last line with no newline; it was never acknowledged and :meth:`AuditLog.open` cuts it
away. Without ``fsync`` every acknowledged entry survives the process being killed at any instant (it is in the kernel's page cache); with
``fsync=True`` it also survives a power loss or a kernel crash.

What the chain cannot show on its own: both files rolled back together to an earlier state, or
both deleted. The keystore's checkpoint of the chain (``checkpoint``: epoch, seq, MAC, checked at
start and kept up while running) and the control plane's head check close that gap.

Callers pass names and ids, never secret values; ``extra`` is theirs to keep clean.

The package splits by role: ``writer`` (:class:`AuditLog`), ``verify`` (:func:`verify`),
``reader`` (:func:`iter_entries`, :func:`snapshot`); ``checkpoint`` keeps the chain's epoch and
a checkpoint in the keystore and finds a lost log; ``_format`` holds what they share.
"""

from agent.audit._format import HEAD_NAME, HEAD_SIZE, LOG_NAME, MAX_LINE
from agent.audit.reader import iter_entries, snapshot
from agent.audit.verify import VerifyReport, verify
from agent.audit.writer import AuditLog

__all__ = [
    "HEAD_NAME",
    "HEAD_SIZE",
    "LOG_NAME",
    "MAX_LINE",
    "AuditLog",
    "VerifyReport",
    "iter_entries",
    "snapshot",
    "verify",
]
