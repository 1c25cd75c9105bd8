"""What a GraphBLAS serialized blob declares, read before GraphBLAS allocates anything.

``GxB_Matrix_deserialize`` trusts the 160-byte header of its blob: it
allocates every array at the length the header states and only then
decompresses into it.  A 263 KB window file whose blob declares an 8.6 GB
value array (zstd frames of run-length zeros) made the aggregator allocate
8.6 GB before any check ran; a blob that declares a sparse (not hypersparse)
2^32 x 2^32 layout asks for 2^32 row pointers (32 GiB).  The SHA-256 in the
window header does not help: a hostile writer computes it over the bomb.

So the header is read here, with ``struct``, and the declared layout must be
exactly the one a hypersparse matrix of the expected number of entries has:
the array lengths follow from ``nvec``, ``nvals`` and the index widths, and
their total is bounded by ``MAX_BYTES_PER_ENTRY`` per entry.  Deserializing a
blob that passes allocates at most that, whatever its compressed bytes hold.

The layout (SuiteSparse:GraphBLAS ``GB_serialize``, stable since v5.2; v10
added the 32-bit index nibbles to the type word, read here too)::

    0   u64  blob size            8   u32  type code (bits 0-3), p/j/i 32-bit flags (bits 12/8/4)
    12  i32  library version      16  i64  vlen      24  i64  vdim      32  i64  nvec
    40  i64  nvec_nonempty        48  i64  nvals     56  i64  type size
    64  i64  Cp, Ch, Cb, Ci, Cx uncompressed lengths (5 x 8 bytes)
    104 f32  hyper_switch         108 f32  bitmap_switch      112 u32 sparsity control
    116 i32  4 * sparsity + 2 * iso + csc
    120 i32  (nblocks, method) for Cp, Ch, Cb, Ci, Cx (5 x 8 bytes)
    160      then u64 compressed block ends per array, the blocks, two names
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import BadWindowFile

HEADER = struct.Struct("<QIiqqqqqqqqqqqffIi10i")
HEADER_SIZE = HEADER.size  # 160
UINT64_CODE = 9            # GB_UINT64_code
TYPE_SIZES = {1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 4, 8: 8, 9: 8, 10: 4, 11: 8, 12: 8, 13: 16}
HYPERSPARSE = 1            # GxB_HYPERSPARSE: the only layout a 2^32 x 2^32 matrix can afford
# Uncompressed bytes a blob may declare per entry (plus BLOB_SLACK): a hypersparse UINT64
# matrix with 64-bit indices needs 8 (column) + 8 (value) per entry and 16 per non-empty row,
# so at most 32; 64 leaves room for any legitimate layout and refuses every bomb, whose
# declared arrays are what make it one.  BLOB_SLACK covers the empty matrix's row pointer.
MAX_BYTES_PER_ENTRY = 64
BLOB_SLACK = 4096
MAX_BLOCKS = 1 << 20       # compressed blocks per array (GraphBLAS writes one per 64 KiB..1 MiB or so)
# Blobs written by GraphBLAS 7.2.0 and earlier store nvals = 0 for (hyper)sparse matrices; the
# reader takes the count from the row pointers, so here it is the column array's length.
NVALS_SINCE = 7_002_001    # GxB_VERSION(7, 2, 1)


@dataclass(frozen=True)
class BlobInfo:
    version: int
    vlen: int
    vdim: int
    nvec: int
    nvals: int
    typecode: int
    typesize: int
    lengths: tuple      # Cp, Ch, Cb, Ci, Cx uncompressed bytes
    widths: tuple       # bytes per entry of Cp, Ch (j), Ci
    sparsity: int
    iso: bool
    nblocks: tuple

    @property
    def declared_bytes(self) -> int:
        return sum(self.lengths)


def parse(blob, what: str = "matrix") -> BlobInfo:
    """The declared layout of a serialized blob; ``BadWindowFile("bad_payload")`` if the header
    is not one GraphBLAS could have written."""
    if len(blob) < HEADER_SIZE:
        raise BadWindowFile("bad_payload", f"{what}: {len(blob)} bytes, shorter than a GraphBLAS blob header")
    f = HEADER.unpack_from(blob)
    size, encoding, version, vlen, vdim, nvec, _nonempty, nvals, typesize = f[:9]
    lengths, sic, blocks = f[9:14], f[17], f[18:28]
    typecode = encoding & 0xF
    flags = ((encoding >> 12) & 0xF, (encoding >> 8) & 0xF, (encoding >> 4) & 0xF)
    nblocks = blocks[0::2]
    problem = None
    if size != len(blob):
        problem = f"declares {size} bytes, has {len(blob)}"
    elif encoding >> 16 or max(flags) > 1 or not 1 <= typecode <= 14:
        problem = f"unknown type word {encoding:#x}"
    elif min(vlen, vdim, nvec, nvals, typesize, *lengths) < 0 or not 0 <= sic < 64:
        problem = "negative sizes"
    elif min(nblocks) < 0 or max(nblocks) > MAX_BLOCKS or HEADER_SIZE + 8 * sum(nblocks) > len(blob):
        problem = f"block counts {nblocks} do not fit in {len(blob)} bytes"
    if problem:
        raise BadWindowFile("bad_payload", f"{what}: not a GraphBLAS blob ({problem})")
    widths = tuple(4 if x else 8 for x in flags)
    if version < NVALS_SINCE and lengths[3] % widths[2] == 0:
        nvals = lengths[3] // widths[2]
    return BlobInfo(version, vlen, vdim, nvec, nvals, typecode, typesize, lengths, widths, sic // 4,
                    bool(sic & 2), nblocks)


def check(blob, n: int, nvals: int | None, dtype_code: int | None = UINT64_CODE, what: str = "matrix") -> BlobInfo:
    """Refuse, before deserializing, a blob that is not an ``n`` x ``n`` hypersparse matrix of
    ``nvals`` entries (any number when None) of type ``dtype_code`` (any when None), or that
    declares arrays larger than such a matrix has."""
    b = parse(blob, what)
    if (b.vlen, b.vdim) != (n, n):
        raise BadWindowFile("wrong_shape", f"{what} declares {b.vdim} x {b.vlen}, expected 2^32 x 2^32")
    if dtype_code is not None and b.typecode != dtype_code:
        raise BadWindowFile("wrong_content", f"{what}: GraphBLAS type code {b.typecode}, expected UINT64")
    if TYPE_SIZES.get(b.typecode) != b.typesize:
        raise BadWindowFile("bad_payload", f"{what}: type code {b.typecode} with {b.typesize}-byte values")
    if nvals is not None and b.nvals != nvals:
        raise BadWindowFile("wrong_content", f"{what}: the blob holds {b.nvals} entries, the header says {nvals}")
    pw, jw, iw = b.widths
    want = (pw * (b.nvec + 1), jw * b.nvec, 0, iw * b.nvals, b.typesize * (1 if b.iso else b.nvals))
    bound = MAX_BYTES_PER_ENTRY * b.nvals + BLOB_SLACK
    if b.declared_bytes > bound:  # a decompression bomb, or a layout no 2^32 x 2^32 matrix can afford
        raise BadWindowFile("too_large", f"{what} declares {b.declared_bytes} bytes of arrays {list(b.lengths)} "
                                         f"for {b.nvals} entries; at most {bound}")
    if b.sparsity != HYPERSPARSE or b.lengths != want:
        raise BadWindowFile("bad_payload", f"{what}: declares arrays of {list(b.lengths)} bytes (layout "
                                           f"{b.sparsity}); a hypersparse matrix of {b.nvals} entries in "
                                           f"{b.nvec} rows has {list(want)}")
    return b
