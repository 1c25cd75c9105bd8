"""The address cache: scramble results kept across calls, i.e. across windows.

Traffic is heavy-tailed, so most packets of a window carry addresses earlier
windows already mapped; looking them up costs one hash probe per packet where
recomputing costs up to 32 cipher blocks per address.  The cache stores whole
results, so it never changes one (unlike cryptopANT's /24 table, see
``scramble.py``).

* **Bounded, two generations**: ``cache_entries`` addresses per generation;
  when the current one would overflow, the old one is emptied and becomes the
  current one, and hits in the old generation are promoted while the current
  one has room.  Memory stays fixed however many distinct addresses pass.
* **Layout**: int64 slots ``(address + 1) << 32 | result`` (0 = empty), linear
  probing at load <= 1/2.  Class E addresses, the only ones where +1 could
  overflow, are never stored: cryptopANT passes them unchanged.
* **Prefetch**: the probes of addresses 16 ahead are prefetched (``llvm.prefetch``):
  new addresses are random accesses into many MiB, and without it each miss
  would wait one DRAM latency in turn.

These kernels call nothing outside this file, so numba's ``cache=True`` sees every edit.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["cache_lookup", "cache_fill", "cache_insert", "new_table"]


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint the cache line of ``arr[idx]`` into the CPU caches (llvm.prefetch; never faults)."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, types.int64)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
        ptr = builder.bitcast(builder.gep(data, [args[1]]), i8p)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return sig, codegen


# Probes of addresses this far ahead are prefetched: a new address's slot is a
# random access into tables of many MiB, so misses would otherwise go one DRAM
# latency at a time.
_AHEAD = 16


@nb.njit(cache=True, inline="always")
def _slot(x, mask):
    h = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    return ((h >> 16) ^ h) & mask


@nb.njit(cache=True)
def cache_lookup(addrs, out, miss, cur, old, use_old, count, cap):
    """out[j] for cached/pass-through addresses; positions of the rest go to ``miss``.

    A slot holds ``(address + 1) << 32 | result`` (0 = empty; class E
    addresses, the only ones where +1 could overflow, are never stored:
    cryptopANT passes them unchanged).  Linear probing, load <= 1/2.  Hits in
    the old generation are promoted while the current one has room.
    """
    mask = cur.size - 1
    n_miss = 0
    n = addrs.size
    for j in range(n):
        if j + _AHEAD < n:
            hp = _slot(np.int64(addrs[j + _AHEAD]), mask)
            _prefetch(cur, hp)
            if use_old:
                _prefetch(old, hp)
        x = np.int64(addrs[j])
        if x >= 0xF0000000:
            out[j] = x
            continue
        kx = x + 1
        h = _slot(x, mask)
        found = False
        while True:
            e = np.int64(cur[h])
            if ((e >> 32) & 0xFFFFFFFF) == kx:
                out[j] = e & 0xFFFFFFFF
                found = True
                break
            if e == 0:
                break
            h = (h + 1) & mask
        if found:
            continue
        h2 = _slot(x, mask)
        while use_old:
            e = np.int64(old[h2])
            if ((e >> 32) & 0xFFFFFFFF) == kx:
                out[j] = e & 0xFFFFFFFF
                found = True
                if count[0] < cap:     # promote into the empty slot the probe above ended on
                    cur[h] = e
                    count[0] += 1
                break
            if e == 0:
                break
            h2 = (h2 + 1) & mask
        if not found:
            miss[n_miss] = j
            n_miss += 1
    return n_miss


@nb.njit(cache=True)
def cache_fill(addrs, miss, out, cur):
    """out[miss] from the current generation; returns how many were not there."""
    mask = cur.size - 1
    absent = 0
    n = miss.size
    for q in range(n):
        if q + _AHEAD < n:
            _prefetch(cur, _slot(np.int64(addrs[miss[q + _AHEAD]]), mask))
        j = miss[q]
        x = np.int64(addrs[j])
        kx = x + 1
        h = _slot(x, mask)
        while True:
            e = np.int64(cur[h])
            if ((e >> 32) & 0xFFFFFFFF) == kx:
                out[j] = e & 0xFFFFFFFF
                break
            if e == 0:
                absent += 1
                break
            h = (h + 1) & mask
    return absent


@nb.njit(cache=True)
def cache_insert(u, res, cur, count, cap):
    mask = cur.size - 1
    n = u.size
    for j in range(n):
        if j + _AHEAD < n:
            _prefetch(cur, _slot(np.int64(u[j + _AHEAD]), mask))
        x = np.int64(u[j])
        if x >= 0xF0000000:
            continue
        kx = x + 1
        h = _slot(x, mask)
        while True:
            e = np.int64(cur[h])
            if ((e >> 32) & 0xFFFFFFFF) == kx:
                break
            if e == 0:
                if count[0] >= cap:
                    return
                cur[h] = (kx << 32) | np.int64(res[j])
                count[0] += 1
                break
            h = (h + 1) & mask


def new_table(slots: int) -> np.ndarray:
    """A zeroed int64 hash table with its pages touched now rather than during the first windows.

    (Transparent huge pages were tried: with the probes prefetched they gained
    little, and the first huge-page allocation of a process sometimes took 100+ ms.)
    """
    t = np.zeros(slots, dtype=np.int64)
    t.fill(0)
    return t
