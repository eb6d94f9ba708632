"""Default values used both by the config parser and by the code that runs without it.

Each value has this one home: ``config/options.py`` takes its ``default=`` from here, and the model
constructors, renderer functions and settings dataclasses use the same names, so a default can only
change in one place. Plain constants (no torch), so every package may import them.
"""

#: Hash-grid field architecture (config keys of the same name; ``HashGridField`` / ``HashGridEncoding``).
HASHGRID = dict(
    hash_level=16,                    # levels of the fine field's grid
    hash_features=2,                  # features per level
    log2_hashmap_size=19,             # table size per level (log2)
    base_resolution=16,               # coarsest grid resolution
    finest_resolution=2048,           # finest grid resolution
    hg_hidden=64,                     # width of the MLP heads
    hg_geo_dim=15,                    # geometry feature passed from the density MLP to the colour branches
    hg_coarse_level=2,                # levels of the coarse (density-oriented) grid
    hg_coarse_log2_hashmap_size=16,
    hg_coarse_finest_resolution=64,
    hg_coarse_hidden=32,
)

#: Rays per rendering chunk and points per network chunk (memory only, results do not depend on them).
CHUNK = 1024 * 32
NETCHUNK = 1024 * 64 * 32

#: Orthonormalise APR rotations by SVD before refining / scoring (every paper config sets it).
SVD_REG = True
