"""Whether a rank's exception says that another rank went away.

When one rank of a job dies (killed by the out-of-memory killer, a segfault, its own bug), the
others fail a moment later in their next collective with the backend's "the peer is gone"
error. Those failures are consequences: a report that names one of them as the rank that
failed first points the user at the wrong process. Gloo and NCCL word it in a few fixed ways.
Gloo's texts below are checked against libtorch_cpu's strings and a real run (a peer killed
with SIGKILL); NCCL's two (its ``ncclRemoteError`` string, torch's communicator abort) are
written from their wording and not checked on a CUDA build: a miss there leaves the old rule
(the earliest end) in force.

A timeout ("Timed out waiting ... for recv") is not one of them: the peer may be alive and
stuck, and the rank that timed out is the first that failed.
"""

from __future__ import annotations

_PEER_GONE = (
    "connection closed by peer",  # gloo, the peer's socket closed
    "connection reset by peer",  # gloo and the TCP store, the peer's process ended
    "caused by a remote worker crashing",  # gloo's hint after either
    "remote process exited or there was a network error",  # NCCL's ncclRemoteError
    "nccl communicator was aborted",  # torch aborting a communicator after a peer failed
)
_MAX_CHAIN = 8  # __cause__ / __context__ links followed
_MAX_TEXT = 4096  # characters of each message read


def lost_a_peer(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from or during, is a backend's "another
    rank is gone" error. Never raises (a message whose ``__str__`` fails is no peer loss)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    for _ in range(_MAX_CHAIN):
        if current is None or id(current) in seen:
            return False
        seen.add(id(current))
        try:
            text = str(current)[:_MAX_TEXT].lower()
        except Exception:  # noqa: BLE001 - a user's exception type may fail to print
            text = ""
        if any(phrase in text for phrase in _PEER_GONE):
            return True
        current = current.__cause__ or current.__context__
    return False
