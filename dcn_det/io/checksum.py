"""The SHA-256 trailer that makes checkpoints and inference files self-verifying.

A sealed file is::

    PAYLOAD + TRAILER
    TRAILER = b"dcn_det-sha256:" + 64 lowercase hex digits   (79 bytes, ASCII)

where the digest is the SHA-256 of every byte before the trailer. ``torch.save`` writes a ZIP
archive whose end-of-central-directory record comes last with an empty comment; sealing sets
that record's comment length to the trailer's size, so the trailer is the archive's ZIP comment
and the sealed file stays a valid ZIP that plain ``torch.load`` (and any ZIP tool) reads. The
patched length field is part of the hashed bytes. A payload that is not such a ZIP archive gets
the trailer appended as is.

The format can be checked without dcn_det::

    head -c -79 FILE | sha256sum;  tail -c 64 FILE; echo
"""
import hashlib
import re
from typing import List, Union

MAGIC = b"dcn_det-sha256:"
TRAILER_SIZE = len(MAGIC) + 64
_HEX = re.compile(rb"^[0-9a-f]{64}$")
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD_SIZE = 22  # end-of-central-directory record without its comment

Buffer = Union[bytes, bytearray, memoryview]


class ChecksumError(ValueError):
    """The stored SHA-256 does not match the payload: the file was changed after it was written."""


def seal(payload: Buffer) -> List[Buffer]:
    """Returns the sealed file as chunks to write in order (no copy of the payload is made).

    Args:
        payload: the bytes ``torch.save`` (or any writer) produced.

    Returns:
        ``[payload head, patched tail, trailer]``; their concatenation is the sealed file.
    """
    view = memoryview(payload)
    if len(view) >= _EOCD_SIZE and bytes(view[-_EOCD_SIZE:-_EOCD_SIZE + 4]) == _EOCD_SIGNATURE \
            and bytes(view[-2:]) == b"\x00\x00":
        head, tail = view[:-2], TRAILER_SIZE.to_bytes(2, "little")
    else:
        head, tail = view, b""
    digest = hashlib.sha256()
    digest.update(head)
    digest.update(tail)
    return [head, tail, MAGIC + digest.hexdigest().encode("ascii")]


def _sealed_zip(view: memoryview) -> bool:
    """True when ``view`` ends with a ZIP end record whose comment is a trailer's size, i.e.
    when :func:`seal` wrote it, even if the trailer itself is damaged."""
    end = len(view) - TRAILER_SIZE
    return end >= _EOCD_SIZE and bytes(view[end - _EOCD_SIZE:end - _EOCD_SIZE + 4]) == \
        _EOCD_SIGNATURE and bytes(view[end - 2:end]) == TRAILER_SIZE.to_bytes(2, "little")


def verify(data: Buffer) -> bool:
    """Checks the trailer of a whole file's bytes.

    Returns:
        True when ``data`` is sealed and intact, False when it carries no trailer (an older or
        foreign file that cannot be verified).

    Raises:
        ChecksumError: the digest of the bytes before the trailer differs from the stored one,
            or the file was sealed (its ZIP comment has the trailer's size) but the trailer is
            not one any more.
    """
    view = memoryview(data)
    tail = bytes(view[-TRAILER_SIZE:]) if len(view) >= TRAILER_SIZE else b""
    stored = tail[len(MAGIC):] if tail.startswith(MAGIC) else None
    if stored is None or not _HEX.match(stored):
        if stored is None and not _sealed_zip(view):
            return False
        raise ChecksumError(f"its checksum trailer is damaged (the last {TRAILER_SIZE} bytes "
                            f"should be {MAGIC.decode()} and 64 hex digits): the file was "
                            "changed or damaged after it was written")
    actual = hashlib.sha256(view[:-TRAILER_SIZE]).hexdigest()
    if actual != stored.decode("ascii"):
        raise ChecksumError(f"its SHA-256 is {actual[:16]}..., the stored checksum is "
                            f"{stored[:16].decode('ascii')}...: the file was changed or "
                            "damaged after it was written")
    return True
