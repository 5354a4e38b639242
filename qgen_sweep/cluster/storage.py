"""Does a results directory look node-local? Multi-node jobs (and requeued jobs, which may land on
another node) need it on storage every node shares.

Two signs, either one enough: the path is under a folder that is node-local by convention
(/tmp, /var/tmp, /dev/shm, /scratch/local, $TMPDIR, ...), or the file system holding it (from
/proc/mounts) is a local type (tmpfs, ext4, xfs, overlay, ...). Shared types (nfs, lustre, gpfs,
beegfs, cephfs, ...) never warn. This is a heuristic: it warns, it never refuses.
"""

from __future__ import annotations

import os
from pathlib import Path

# Folders that hold node-local scratch on typical clusters and workstations.
LOCAL_PREFIXES = ("/tmp", "/var/tmp", "/dev/shm", "/scratch/local", "/local", "/localscratch",
                  "/lscratch", "/run")
# File-system types that live on one machine (a disk or memory), as named in /proc/mounts.
LOCAL_FS_TYPES = frozenset({"tmpfs", "ramfs", "overlay", "ext2", "ext3", "ext4", "xfs", "btrfs",
                            "zfs", "f2fs", "vfat", "devtmpfs"})


def _unescape_mount(field: str) -> str:
    """/proc/mounts writes spaces and tabs in mount points as octal escapes (\\040, \\011)."""
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")


def filesystem_type(path: Path, mounts_file: Path = Path("/proc/mounts")) -> str | None:
    """The type of the file system holding `path` (longest matching mount point), or None."""
    # resolve() follows the symlinks of the parts that exist; a path not created yet belongs to
    # the mount of its longest existing prefix, which the prefix match below finds.
    target = str(path.resolve())
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = _unescape_mount(fields[1])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, fields[2]
    return best_type


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def node_local_reason(path: Path | str, mounts_file: Path = Path("/proc/mounts")) -> str | None:
    """Why `path` looks node-local (one phrase), or None when it looks shared."""
    absolute = os.path.abspath(path)  # the path as written (resolve() would follow /tmp links)
    prefixes = list(LOCAL_PREFIXES)
    if os.environ.get("TMPDIR"):
        prefixes.append(os.environ["TMPDIR"])
    for prefix in prefixes:
        if _under(absolute, prefix):
            return f"it is under {prefix}, node-local scratch on most clusters"
    fs_type = filesystem_type(Path(absolute), mounts_file)
    if fs_type in LOCAL_FS_TYPES:
        return f"its file system is {fs_type}, a node-local type"
    return None
