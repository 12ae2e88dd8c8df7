"""Tar shards read in place: a sample's image is the address `SHARD.tar#MEMBER`, read by seeking to its bytes
through an index of member offsets built once per shard (per process) from the tar headers alone. Nothing is
unpacked to disk, and every stage that takes a path (decoding workers, the GPU reader, the image-embedding
store, report thumbnails) takes an address too.

Torch-free, so the walk and the CLI's checks can use it before torch loads.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import IO

_MARK = ".tar#"
_KEEP = 64  # shard indexes kept per process (a 10,000-sample shard's index is about 2 MB)


class MemberError(Exception):
    """A member that cannot be read; the message is the one-line reason."""


@dataclass(frozen=True)
class ShardIndex:
    """Where each regular member's bytes lie, in the shard's own order, for one stat identity of the shard.

    A name may occur more than once (a shard appended to with `tar -r`): `members` holds every occurrence in
    order, its k-th occurrence (k >= 2) addressed as NAME#k, so webdataset's reading (which sees them all) and
    ours agree."""

    shard: str
    size: int
    mtime_ns: int
    members: dict[str, tuple[int, int]] = field(default_factory=dict)  # address name -> (data offset, size)
    error: str | None = None  # why the headers stop early (a truncated or damaged shard)
    ended_early: bool = False  # the file ends without tar's end-of-archive marker: cut, maybe at a member boundary


_INDEXES: OrderedDict[str, ShardIndex] = OrderedDict()
_LOCK = threading.Lock()


def member_address(shard: str | os.PathLike, member: str) -> str:
    return f"{os.fspath(shard)}#{member}"


def split_member(address: str) -> tuple[str, str] | None:
    """(shard, member) when `address` names a member of a .tar shard, else None. A real file whose name happens
    to hold '.tar#' is a file: callers check `is_member` before treating it as an address."""
    at = address.find(_MARK)
    if at < 0:
        return None
    return address[: at + len(_MARK) - 1], address[at + len(_MARK) :]


def is_member(address: str) -> tuple[str, str] | None:
    """split_member, for an address that is not also an existing file."""
    parts = split_member(address)
    return parts if parts is not None and not os.path.lexists(address) else None


def sample_key(member: str) -> str:
    """webdataset's sample key of a member: its path up to the first dot of the base name."""
    match = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", member)
    return match.group(1) if match else member


def describe(shard: str, member: str) -> str:
    """How a skip reason names a sample: its key and shard."""
    return f"sample {sample_key(member)} of shard {shard}"


def shard_index(shard: str) -> ShardIndex:
    """The shard's member index, read from its headers (tarfile seeks over the data), cached while the shard's
    size and mtime stay the same. Raises OSError when the shard cannot be opened."""
    st = os.stat(shard)
    with _LOCK:
        cached = _INDEXES.get(shard)
        if cached is not None and (cached.size, cached.mtime_ns) == (st.st_size, st.st_mtime_ns):
            _INDEXES.move_to_end(shard)
            return cached
    members: dict[str, tuple[int, int]] = {}
    seen: dict[str, int] = {}
    error, ended_early = None, False
    with open(shard, "rb") as f:
        try:
            with tarfile.open(fileobj=f, mode="r:") as tar:
                while (info := tar.next()) is not None:
                    tar.members.clear()  # the index is all we keep; TarFile would hold every TarInfo
                    if info.isreg():
                        seen[info.name] = seen.get(info.name, 0) + 1
                        name = info.name if seen[info.name] == 1 else f"{info.name}#{seen[info.name]}"
                        members[name] = (info.offset_data, info.size)
                # tarfile stops quietly where the file ends on a header boundary: a shard cut between members
                # reads as complete. A whole archive ends with zero blocks (the end-of-archive marker).
                f.seek(tar.offset)
                ended_early = f.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE
        except (tarfile.TarError, EOFError) as exc:
            error = f"not a readable tar file after {len(members)} members ({exc})"
    index = ShardIndex(shard, st.st_size, st.st_mtime_ns, members, error, ended_early)
    with _LOCK:
        _INDEXES[shard] = index
        _INDEXES.move_to_end(shard)
        while len(_INDEXES) > _KEEP:
            _INDEXES.popitem(last=False)
    return index


def tar_name(name: str, index: ShardIndex) -> str:
    """The member's name in the tar: an address name NAME#k (its k-th occurrence) less its '#k'."""
    match = re.fullmatch(r"(.*)#([0-9]+)", name)
    return match.group(1) if match and int(match.group(2)) >= 2 and match.group(1) in index.members else name


def _locate(shard: str, member: str) -> tuple[ShardIndex, int, int]:
    try:
        index = shard_index(shard)
    except OSError as exc:
        raise MemberError(f"cannot open the shard ({exc.strerror or exc})") from None
    found = index.members.get(member)
    if found is None:
        why = f"; the shard is {index.error}" if index.error else ""
        raise MemberError(f"no member {member!r} in the shard{why}")
    offset, size = found
    if size == 0:
        raise MemberError("empty member")
    if offset + size > index.size:
        raise MemberError(f"truncated: the shard ends {offset + size - index.size} bytes before the member does")
    return index, offset, size


def read_member(shard: str, member: str) -> bytes:
    """The member's bytes, by one seek and one read."""
    _, offset, size = _locate(shard, member)
    try:
        with open(shard, "rb") as f:
            f.seek(offset)
            data = f.read(size)
    except OSError as exc:
        raise MemberError(f"cannot read the shard ({exc.strerror or exc})") from None
    if len(data) != size:
        raise MemberError(f"truncated: {len(data)} of {size} bytes")
    return data


def member_identity(shard: str, member: str) -> tuple[str, int, int]:
    """(key, size, stamp) for the image-embedding store: the key is the absolute address, the size the member's,
    and the stamp folds the shard's stat identity (size, mtime) with the member's offset, so any rewrite of the
    shard falls back to the member's content hash."""
    index, offset, size = _locate(shard, member)
    digest = hashlib.blake2b(f"{index.size}:{index.mtime_ns}:{offset}".encode(), digest_size=8).digest()
    return member_address(os.path.abspath(shard), member), size, int.from_bytes(digest, "big") >> 1


def image_source(path: str) -> str | IO[bytes]:
    """What PIL should open for a path or a member address (raises OSError when the member cannot be read)."""
    parts = is_member(path)
    if parts is None:
        return path
    try:
        return io.BytesIO(read_member(*parts))
    except MemberError as exc:
        raise OSError(str(exc)) from None
