"""RFC 6962 trees against the published vectors (transparency-dev/merkle, the former Trillian
``merkle`` package: ``proof/verify_test.go``), then properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import (
    EMPTY_ROOT,
    CompactTree,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- the published vectors, as data -------------------------------------------------------
LEAVES = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]
#: ROOTS[i]: the root of the tree of the first i + 1 leaves.
ROOTS = [
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
#: (leaf number counted from 1, tree size, audit path).
INCLUSION = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (3, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        2,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
#: (old size, new size, proof).
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")
HASHED = [leaf_hash(leaf) for leaf in LEAVES]


def test_the_empty_tree_hashes_to_sha256_of_nothing() -> None:
    assert h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == EMPTY_ROOT
    assert root_of([]) == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_published_vectors(size: int) -> None:
    assert root_of(HASHED[:size]) == ROOTS[size - 1]


@pytest.mark.parametrize(("leaf", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_and_verify(leaf: int, size: int, path: list[bytes]) -> None:
    assert inclusion_proof(HASHED[:size], leaf - 1) == path
    assert verify_inclusion(HASHED[leaf - 1], leaf - 1, size, path, ROOTS[size - 1])


@pytest.mark.parametrize(("leaf", "size", "path"), INCLUSION[1:])
def test_corrupted_inclusion_proofs_fail(leaf: int, size: int, path: list[bytes]) -> None:
    index, root, hashed = leaf - 1, ROOTS[size - 1], HASHED[leaf - 1]
    wrong = [
        (index - 1, size, hashed, path, root),
        (index + 1, size, hashed, path, root),
        (index ^ 2, size, hashed, path, root),
        (index, size * 2, hashed, path, root),
        (index, size // 2, hashed, path, root),
        (index, size, SOME_HASH, path, root),
        (index, size, hashed, path, EMPTY_ROOT),
        (index, size, hashed, path, SOME_HASH),
        (index, size, hashed, [*path, root], root),
        (index, size, hashed, [root, *path], root),
        (index, size, hashed, path[:-1], root),
    ]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        wrong.append((index, size, hashed, flipped, root))
    for probe in wrong:
        assert not verify_inclusion(probe[2], probe[0], probe[1], probe[3], probe[4]), probe[:2]


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_proofs_match_and_verify(old: int, new: int, path: list[bytes]) -> None:
    assert consistency_proof(HASHED[:new], old) == path
    assert verify_consistency(old, new, path, ROOTS[old - 1], ROOTS[new - 1])


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY[1:])
def test_corrupted_consistency_proofs_fail(old: int, new: int, path: list[bytes]) -> None:
    r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
    wrong = [
        (old - 1, new, path, r1, r2),
        (old + 1, new, path, r1, r2),
        (old ^ 2, new, path, r1, r2),
        (old, new * 2, path, r1, r2),
        (old, new // 2, path, r1, r2),
        (old, new, path, SOME_HASH, r2),
        (old, new, path, r1, SOME_HASH),
        (old, new, path, r2, r1),
        (old, new, [], r1, r2),
        (old, new, [*path, r1], r1, r2),
        (old, new, [*path, r2], r1, r2),
        (old, new, [r1, *path], r1, r2),
        (old, new, [r2, *path], r1, r2),
        (old, new, [path[0], *path], r1, r2),
        (old, new, path[:-1], r1, r2),
    ]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        wrong.append((old, new, flipped, r1, r2))
    for probe in wrong:
        assert not verify_consistency(*probe), probe[:2]


def test_edge_sizes_follow_the_reference_verifier() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    assert verify_consistency(0, 0, [], a, a)
    assert verify_consistency(0, 1, [], a, b)
    assert verify_consistency(1, 1, [], b, b)
    assert not verify_consistency(1, 1, [], a, b)
    assert not verify_consistency(1, 0, [], a, b)
    assert not verify_consistency(2, 1, [], a, b)
    assert not verify_consistency(1, 2, [], a, b)
    assert not verify_consistency(0, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, 0, 0, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, 2, 1, [], SOME_HASH)
    single = leaf_hash(b"data")
    assert verify_inclusion(single, 0, 1, [], single)


# --- properties ---------------------------------------------------------------------------
leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_any_inclusion_proof_verifies_and_one_changed_byte_fails(
    entries: list[bytes], data: st.DataObject
) -> None:
    hashed = [leaf_hash(e) for e in entries]
    index = data.draw(st.integers(0, len(hashed) - 1))
    proof = inclusion_proof(hashed, index)
    root = root_of(hashed)
    assert verify_inclusion(hashed[index], index, len(hashed), proof, root)
    assert len(proof) <= (len(hashed) - 1).bit_length()
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        byte = data.draw(st.integers(0, 31))
        bad = list(proof)
        bad[which] = bad[which][:byte] + bytes([bad[which][byte] ^ 1]) + bad[which][byte + 1 :]
        assert not verify_inclusion(hashed[index], index, len(hashed), bad, root)
    other = leaf_hash(entries[index] + b"!")
    assert not verify_inclusion(other, index, len(hashed), proof, root)


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_any_consistency_proof_verifies_and_one_changed_byte_fails(
    entries: list[bytes], data: st.DataObject
) -> None:
    hashed = [leaf_hash(e) for e in entries]
    old = data.draw(st.integers(1, len(hashed)))
    proof = consistency_proof(hashed, old)
    r1, r2 = root_of(hashed[:old]), root_of(hashed)
    assert verify_consistency(old, len(hashed), proof, r1, r2)
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[which] = bytes([bad[which][0] ^ 0x80]) + bad[which][1:]
        assert not verify_consistency(old, len(hashed), bad, r1, r2)
    if old < len(hashed):
        # A rewritten old entry: the old root no longer fits the new tree.
        changed = list(hashed)
        changed[old - 1] = leaf_hash(entries[old - 1] + b"x")
        assert not verify_consistency(old, len(hashed), proof, root_of(changed[:old]), r2)


@settings(max_examples=100, deadline=None)
@given(leaf_lists, st.data())
def test_compact_tree_collects_proofs_in_one_pass_and_resumes_from_its_frontier(
    entries: list[bytes], data: st.DataObject
) -> None:
    hashed = [leaf_hash(e) for e in entries]
    n = len(hashed)
    index = data.draw(st.integers(0, n - 1))
    old = data.draw(st.integers(0, n))
    wanted = inclusion_ranges(index, n) + consistency_ranges(old, n)
    tree = CompactTree(want=wanted)
    cut = data.draw(st.integers(0, n))
    for leaf in hashed[:cut]:
        tree.append(leaf)
    assert len(tree.frontier) == bin(cut).count("1")
    resumed = CompactTree.restore(tree.size, tree.frontier)
    assert resumed.root() == root_of(hashed[:cut])
    tree.extend(hashed[cut:])
    assert tree.root() == root_of(hashed)
    assert tree.hashes(inclusion_ranges(index, n)) == inclusion_proof(hashed, index)
    assert tree.hashes(consistency_ranges(old, n)) == consistency_proof(hashed, old)


def test_restore_refuses_a_frontier_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="frontier"):
        CompactTree.restore(3, [SOME_HASH])
