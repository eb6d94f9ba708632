"""Synthetic scenes rendered on the CPU in the exact 7-Scenes and Cambridge on-disk layouts.

The project proves NeFeS + DFNet end to end on scenes it renders itself (entry point:
``data/make_synthetic.py``). Two kinds:

* ``room``   (7-Scenes style): a furnished room (~5 x 4 x 2.6 m), hand-held cameras at 1.2-1.8 m; writes
  colour, dSLAM-style poses, z-depth and a COLMAP-style pseudo-GT list in its own world frame.
* ``street`` (Cambridge style): a street with facades, trees, a far backdrop and moving pedestrians/cars
  (transients) marked 0 in 8-bit semantic masks (255 = static).

Conventions
-----------
* World frame: metres, z up (gravity -z). Pose files hold camera-to-world 4x4 matrices with OpenCV camera
  axes (x right, y down, z forward). The COLMAP list is world-to-camera in a second world frame
  ``X_colmap = G · X_world`` (G: a fixed random rigid transform, written to ``synthetic_info.json``).
* Pixels: the ray of integer pixel (u, v) has camera direction ``((u - W/2)/f, (v - H/2)/f, 1)``, the
  convention of ``models/rays.py`` (principal point W/2, H/2). With that direction un-normalised the ray
  parameter *is* the z-depth, which the depth PNGs hold (millimetres, 65535 = no hit).
* Image formation: linear radiance (Lambertian albedo x irradiance of point lights / sun + ambient, static
  shadows baked into the textures) x mild vignetting x per-frame exposure gain, then gamma 1/2.2, clip, a
  little sensor noise, 8 bit. Textures are mip-mapped and sampled trilinearly; pixels on geometric edges
  are re-rendered with 2x2 sub-samples.

Everything is vectorised numpy (Python loops only over primitives, textures and frames) and deterministic
for a seed; geometry and trajectories do not depend on the image size (small images get coarser texels).

Modules: ``patterns`` / ``materials`` (procedural textures), ``atlas`` (mip-mapped lookups), ``raycast``
(primitives, camera, casting), ``render`` (Scene: shading and rendering), ``builder`` (scene assembly,
shadow baking), ``room`` / ``street`` (the two scenes), ``trajectories`` (camera paths, exposure),
``generate`` (the on-disk layouts).
"""
from data.synthetic.atlas import TextureAtlas, canvas_dims
from data.synthetic.constants import (EXPOSURE_RANGE, GENERATOR_VERSION, INCOMPLETE_MARKER, INFO_FILE,
                                                 KINDS, LAYOUTS, REF_CAMERA, ROOM_TEST_COVERAGE_FRACTION,
                                                 STREET_TEST_COVERAGE_M, SyntheticError)
from data.synthetic.generate import build_scene, colmap_world_transform, generate
from data.synthetic.raycast import Box, Cylinder, Intrinsics, Sphere, cast, default_intrinsics, pixel_rays
from data.synthetic.render import Frame, PointLight, Scene
from data.synthetic.room import build_room
from data.synthetic.street import build_street
from data.synthetic.trajectories import bspline_curve, camera_rotation, exposure_walk, make_trajectory

__all__ = [
    "Box", "Cylinder", "EXPOSURE_RANGE", "ROOM_TEST_COVERAGE_FRACTION", "STREET_TEST_COVERAGE_M", "Frame", "GENERATOR_VERSION", "INCOMPLETE_MARKER", "INFO_FILE", "Intrinsics",
    "KINDS", "LAYOUTS", "PointLight", "REF_CAMERA", "Scene", "Sphere", "SyntheticError", "TextureAtlas",
    "bspline_curve", "build_room", "build_scene", "build_street", "camera_rotation", "canvas_dims", "cast",
    "colmap_world_transform", "default_intrinsics", "exposure_walk", "generate", "make_trajectory", "pixel_rays",
]
