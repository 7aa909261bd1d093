"""RFC 6962 Merkle trees: leaf and node hashing, a compact appendable tree, proofs, verifiers.

Pure: no I/O, no clock. Hashes are SHA-256 with RFC 6962's domain separation (``0x00`` before
a leaf's data, ``0x01`` before two child hashes), so a leaf can never pass for a node.

- :class:`CompactTree` appends leaf hashes one by one keeping only the right edge of the tree
  (the "frontier": one hash per perfect subtree, ``popcount(size)`` hashes, O(log n) memory);
  appending n leaves costs n - popcount(n) node hashes in total. Its frontier can be saved and
  restored, so a writer resumes without re-reading its leaves.
- :func:`inclusion_proof` / :func:`consistency_proof` are RFC 6962's ``PATH`` and ``PROOF``.
  Every node they use is either a perfect aligned subtree or a range ending at the tree's
  size, so :class:`CompactTree` can collect them in the same single pass that computes the
  root (``want``): a proof over millions of leaves needs no list of them in memory.
- :func:`verify_inclusion` / :func:`verify_consistency` are RFC 9162's verification
  algorithms (2.1.3.2 and 2.1.4.2); anyone holding a root can run them offline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactTree",
    "Range",
    "consistency_proof",
    "consistency_ranges",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: The root of the empty tree: SHA-256 of nothing (RFC 6962 2.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: A half-open range of leaf indexes [start, end) whose subtree hash a proof needs.
Range = tuple[int, int]

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """MTH of one entry: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """An interior node: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash (MTH) of a list of leaf hashes."""
    tree = CompactTree()
    tree.extend(leaves)
    return tree.root()


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes make up ``PATH(index, D[size])``, leaf level first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    out: list[Range] = []

    def path(m: int, start: int, end: int) -> None:
        n = end - start
        if n == 1:
            return
        k = _split(n)
        if m < k:
            path(m, start, start + k)
            out.append((start + k, end))
        else:
            path(m - k, start + k, end)
            out.append((start, start + k))

    path(index, 0, size)
    return out


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The ranges whose hashes make up ``PROOF(old_size, D[new_size])`` (RFC 6962 2.1.2)."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    out: list[Range] = []
    if old_size in (0, new_size):
        return out

    def subproof(m: int, start: int, end: int, whole: bool) -> None:
        n = end - start
        if m == n:
            if not whole:
                out.append((start, end))
            return
        k = _split(n)
        if m <= k:
            subproof(m, start, start + k, whole)
            out.append((start + k, end))
        else:
            subproof(m - k, start + k, end, False)
            out.append((start, start + k))

    subproof(old_size, 0, new_size, True)
    return out


def _range_hash(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    return root_of(leaves[start:end])


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``leaves`` (a list of leaf hashes)."""
    return [_range_hash(leaves, a, b) for a, b in inclusion_ranges(index, len(leaves))]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the tree of ``leaves[:old_size]`` is a prefix of the tree of ``leaves``."""
    return [_range_hash(leaves, a, b) for a, b in consistency_ranges(old_size, len(leaves))]


class CompactTree:
    """An append-only Merkle tree that keeps only its frontier (O(log n) hashes).

    ``want`` names ranges (from :func:`inclusion_ranges` / :func:`consistency_ranges` of the
    final size) whose hashes :meth:`hashes` returns once the tree has reached that size: perfect
    aligned subtrees are caught as they complete, ranges ending at the size are folded from the
    frontier at the end.
    """

    __slots__ = ("_caught", "_frontier", "_size", "_stops", "_want")

    def __init__(self, want: Iterable[Range] = ()) -> None:
        self._frontier: list[bytes] = []
        self._size = 0
        self._want: dict[tuple[int, int], Range] = {}
        self._caught: dict[Range, bytes] = {}
        for start, end in want:
            width = end - start
            if width > 0 and width & (width - 1) == 0 and start % width == 0:
                self._want[(width.bit_length() - 1, start)] = (start, end)
        #: Leaf indexes whose append completes a wanted node (taken the slow way by extend).
        self._stops = sorted({start + (1 << level) - 1 for level, start in self._want})

    @classmethod
    def restore(
        cls, size: int, frontier: Sequence[bytes], caught: Mapping[Range, bytes] | None = None
    ) -> CompactTree:
        """A tree resumed from a saved :attr:`frontier` (one hash per set bit of ``size``),
        with the wanted hashes another tree had :attr:`caught` (e.g. in another process)."""
        if size < 0 or len(frontier) != bin(size).count("1"):
            raise ValueError(f"a tree of {size} leaves has {bin(size).count('1')} frontier hashes")
        if any(len(h) != HASH_SIZE for h in frontier):
            raise ValueError("frontier hashes must be 32 bytes")
        tree = cls()
        tree._frontier = list(frontier)
        tree._size = size
        tree._caught = dict(caught or {})
        return tree

    @property
    def size(self) -> int:
        return self._size

    @property
    def wanted(self) -> tuple[Range, ...]:
        """The ranges asked for at construction (perfect subtrees only)."""
        return tuple(self._want.values())

    @property
    def caught(self) -> dict[Range, bytes]:
        """The wanted subtree hashes seen so far."""
        return dict(self._caught)

    @property
    def frontier(self) -> tuple[bytes, ...]:
        """The perfect subtrees' hashes, largest (leftmost) first."""
        return tuple(self._frontier)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (see :func:`leaf_hash`)."""
        node = leaf
        index = self._size
        want = self._want
        if want and (0, index) in want:
            self._caught[want[(0, index)]] = node
        level = 0
        bits = index
        frontier = self._frontier
        while bits & 1:
            node = node_hash(frontier.pop(), node)
            level += 1
            bits >>= 1
            if want:
                key = (level, (index >> level) << level)
                if key in want:
                    self._caught[want[key]] = node
        frontier.append(node)
        self._size = index + 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaf hashes: the same as :meth:`append` each, in a tighter loop."""
        at = 0
        while at < len(leaves):
            stop = self._next_stop()
            end = len(leaves) if stop is None else min(len(leaves), at + stop - self._size)
            self._fast(leaves[at:end])
            at = end
            if at < len(leaves) and stop == self._size:
                self.append(leaves[at])  # completes a wanted node: caught there
                at += 1

    def _next_stop(self) -> int | None:
        stops = self._stops
        while stops and stops[0] < self._size:
            stops.pop(0)
        return stops[0] if stops else None

    def _fast(self, leaves: Sequence[bytes]) -> None:
        """Append leaves in aligned perfect blocks, each hashed level by level (no wants)."""
        sha = _sha256
        at, n = 0, len(leaves)
        while at < n:
            size = self._size
            room = size & -size if size else 1 << (n - at).bit_length()
            width = min(room, 1 << ((n - at).bit_length() - 1))
            level = list(leaves[at : at + width])
            while len(level) > 1:
                level = [
                    sha(b"\x01" + left + right).digest()
                    for left, right in zip(level[0::2], level[1::2], strict=True)
                ]
            self._push(level[0], width)
            at += width

    def _push(self, node: bytes, width: int) -> None:
        """Add a perfect subtree of ``width`` leaves at the aligned end of the tree."""
        frontier = self._frontier
        bits = self._size // width
        while bits & 1:
            node = _sha256(b"\x01" + frontier.pop() + node).digest()
            bits >>= 1
        frontier.append(node)
        self._size += width

    def root(self) -> bytes:
        """The tree hash of everything appended so far (:data:`EMPTY_ROOT` when empty)."""
        return self._fold(0)

    def _fold(self, start: int) -> bytes:
        """The hash of the range [start, size), when it is a union of frontier subtrees."""
        if self._size == 0:
            return EMPTY_ROOT
        picked: list[bytes] = []
        at = 0
        position = 0
        for bit in range(self._size.bit_length() - 1, -1, -1):
            if self._size >> bit & 1:
                if at >= start:
                    if not picked and at != start:
                        break
                    picked.append(self._frontier[position])
                at += 1 << bit
                position += 1
        if not picked:
            raise ValueError(f"range [{start}, {self._size}) is not on the right edge")
        node = picked[-1]
        for left in reversed(picked[:-1]):
            node = node_hash(left, node)
        return node

    def hashes(self, ranges: Sequence[Range]) -> list[bytes]:
        """The hashes of ``ranges`` (each wanted at construction, or ending at the size)."""
        out: list[bytes] = []
        for start, end in ranges:
            found = self._caught.get((start, end))
            if found is None:
                if end != self._size:
                    raise ValueError(f"range [{start}, {end}) was not wanted when building")
                found = self._fold(start)
            out.append(found)
        return out


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True when ``proof`` puts leaf hash ``leaf`` at ``index`` in tree ``root`` of ``size``."""
    if not 0 <= index < size or len(leaf) != HASH_SIZE or len(root) != HASH_SIZE:
        return False
    fn, sn, node = index, size - 1, leaf
    for sibling in proof:
        if len(sibling) != HASH_SIZE or sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == root


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """True when ``proof`` shows (old_size, old_root) is a prefix of (new_size, new_root)."""
    if not 0 <= old_size <= new_size:
        return False
    if any(len(h) != HASH_SIZE for h in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
