"""The test inputs every llq reference script shares: an integer hash of (seed, index) mapped to
k/2^23 in [-1, 1), exact in f32, so the Rust tests regenerate them bit for bit
(`llq_sdk::testing::hash_values`, `row_scale`) instead of reading them from the fixtures."""
import numpy as np

MASK = 0xFFFFFFFF


def hashes(seed, n):
    i = np.arange(n, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(seed * 97531 + 12345)) & np.uint64(MASK)
    for _ in range(2):
        h ^= h >> np.uint64(16)
        h = (h * np.uint64(0x45D9F3B)) & np.uint64(MASK)
    h ^= h >> np.uint64(16)
    return h


def values(seed, n):
    h = hashes(seed, n)
    return ((h >> np.uint64(8)).astype(np.int64) - (1 << 23)).astype(np.float32) / np.float32(1 << 23)


def row_scale(rows):
    r = np.arange(rows)
    return (np.float32(2.0) ** (r % 9 - 4).astype(np.float32)) * (np.float32(1.0) + (r % 5).astype(np.float32) / np.float32(4.0))


def tensor(family, seed, rows, cols):
    x = values(seed, rows * cols).reshape(rows, cols)
    if family == "scaled_rows":
        x = (x * row_scale(rows)[:, None].astype(np.float32)).astype(np.float32)
    elif family == "zeros_and_repeats":
        x[:, :32] = 0.0          # an all-zero block in every row
        x[:, 32:64] = np.float32(0.375)  # a block of one repeated value
    return x.astype(np.float32)
