"""An authenticated map from every stream to its head, committed to by each signed checkpoint.

The hash chain and the signed checkpoint vouch for the ledger's last event. What a read
needs is different: that the event a command takes as a stream's head (a secret's value,
the keyring's state) really is the newest event of that stream. Walking the chain to show
it would cost the whole ledger per command, so each checkpoint also signs the root of a
Merkle tree over the streams' heads, and a read checks one stream against that root with
a short proof.

The tree is fixed in shape: each stream falls into one of ``BUCKETS`` buckets by the
SHA-256 of its name, and a binary tree of ``DEPTH`` levels sits over the buckets. A
bucket's digest covers the leaves of all its streams in name order; a leaf covers the
stream's name, revision, head seq, head event hash and a running digest of every event
hash in the stream (so a reader that folds a whole stream, the keyring, can check every
event of it, not only the head). A proof for one stream is its bucket's leaves and the
``DEPTH`` sibling digests on the way up: a bucket holds about ``streams / 65,536`` leaves,
so at a million streams a proof reads some 15 leaves and 16 digests.

Nodes are numbered as in a binary heap: the root is 1, node ``n`` has children ``2n``
and ``2n + 1``, and bucket ``b`` is node ``BUCKETS + b``. A node never stored holds the
digest of an empty subtree of its level. This module is pure: the recorder stores the
leaves and nodes and calls it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

DEPTH = 16
BUCKETS = 1 << DEPTH
#: The running digest of a stream before its first event.
STREAM_START = "0" * 64

_LEAF = b"keyledger/heads/leaf\0"
_BUCKET = b"keyledger/heads/bucket\0"
_NODE = b"keyledger/heads/node\0"
_STREAM = b"keyledger/heads/stream\0"


def bucket_of(stream: str) -> int:
    """The bucket a stream's leaf sits in: the first two bytes of its name's SHA-256
    (-1, no bucket, for a name that is not text: a row no keyledger wrote)."""
    if not isinstance(stream, str):
        return -1
    try:
        return int.from_bytes(hashlib.sha256(stream.encode("utf-8")).digest()[:2], "big")
    except UnicodeError:
        return -1


def next_stream_digest(previous: str, event_hash: str) -> str:
    """A stream's running digest after one more event (hex): it covers every event hash
    of the stream in revision order, so no event of it can change unnoticed."""
    return hashlib.sha256(
        _STREAM + bytes.fromhex(previous) + bytes.fromhex(event_hash)
    ).hexdigest()


#: What a leaf holds: ``(stream, revision, head_seq, head_hash, stream_digest)``.
Leaf = tuple[str, int, int, str, str]


def leaf_digest(leaf: Leaf) -> bytes:
    """A leaf's digest: its fields at fixed widths, the name length-prefixed, so no two
    leaves share an encoding."""
    stream, revision, head_seq, head_hash, digest = leaf
    try:
        name = stream.encode("utf-8")
        return hashlib.sha256(
            _LEAF + len(name).to_bytes(4, "big") + name + revision.to_bytes(8, "big")
            + head_seq.to_bytes(8, "big") + bytes.fromhex(head_hash) + bytes.fromhex(digest)
        ).digest()
    except (AttributeError, TypeError, OverflowError, ValueError, UnicodeError):
        # A field no keyledger writes (text where a number belongs, not hex, too large).
        raise ValueError("malformed leaf") from None


def bucket_digest(leaves: Iterable[Leaf]) -> bytes:
    """The digest of one bucket: its leaves in name order (the order does not depend on
    how the caller found them)."""
    return bucket_digest_of(sorted((leaf[0], leaf_digest(leaf)) for leaf in leaves))


def bucket_digest_of(digests: Iterable[tuple[str, bytes]]) -> bytes:
    """:func:`bucket_digest` from ``(stream, leaf digest)`` pairs already in name order."""
    return hashlib.sha256(_BUCKET + b"".join(d for _, d in digests)).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _empty_digests() -> list[bytes]:
    """The digest of an empty subtree at each level, root (0) to buckets (``DEPTH``)."""
    empty = [hashlib.sha256(_BUCKET).digest()]
    for _ in range(DEPTH):
        empty.append(_node(empty[-1], empty[-1]))
    return empty[::-1]


EMPTY = _empty_digests()
EMPTY_ROOT = EMPTY[0].hex()


def node_of_bucket(bucket: int) -> int:
    return BUCKETS + bucket


def siblings_needed(buckets: Iterable[int]) -> set[int]:
    """The nodes whose stored digests a proof of ``buckets`` reads: the siblings on their
    paths to the root that are not themselves on one of those paths."""
    on_path: set[int] = set()
    for bucket in buckets:
        node = node_of_bucket(bucket)
        while node > 1:
            on_path.add(node)
            node >>= 1
    return {node ^ 1 for node in on_path} - on_path


def recompute(
    buckets: Mapping[int, bytes], stored: Mapping[int, bytes]
) -> tuple[str, dict[int, bytes]]:
    """The root (hex) when ``buckets`` (bucket -> digest) hold these digests and every
    other node holds what ``stored`` says (an empty subtree where it says nothing), and
    the digest of every node on the buckets' paths, for storing."""
    level = {node_of_bucket(b): digest for b, digest in buckets.items()}
    computed = dict(level)
    for depth in range(DEPTH, 0, -1):
        parents: dict[int, bytes] = {}
        for node in level:
            parent = node >> 1
            if parent in parents:
                continue
            left, right = parent << 1, (parent << 1) | 1
            parents[parent] = _node(
                level.get(left) or stored.get(left) or EMPTY[depth],
                level.get(right) or stored.get(right) or EMPTY[depth],
            )
        level = parents
        computed.update(parents)
    root = computed.get(1)
    return (root.hex() if root is not None else stored.get(1, EMPTY[0]).hex()), computed
