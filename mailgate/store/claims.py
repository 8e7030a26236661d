"""Who holds a claim: a process identity that a restarted gateway can check.

A claim's lease tells other workers to keep off an item while it is worked
on.  When the worker is killed, its leases would hold the items (and every
later mail of the same tickets) until they run out.  So each claim also
names its holder, ``host:pid:start``, and a worker on the same host takes up
at once the claims of holders that are gone.  The process start time (from
/proc) tells a reused pid from the process that made the claim.  Claims of
other hosts are left to their leases, which the holder renews while it works
(mailgate.runner), so those can be short.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache


#: A start time that could not be read.
UNKNOWN = -1


@lru_cache(maxsize=1)
def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def host_prefix() -> str:
    return f"{socket.gethostname()}:"


def holder_is_gone(holder: str | None) -> bool:
    """True only when ``holder`` is a process of this host that is certainly not running."""
    if not holder or holder == this_process():
        return False
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    started = _start_time(int(parts[1]))
    if started == UNKNOWN:
        return False
    # No such pid, or the pid now belongs to a process started later.
    return started is None or str(started) != parts[2]


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (proc(5), field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return UNKNOWN  # cannot tell: treated as running (never take a live claim)
    return int(fields[19])
