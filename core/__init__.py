"""Neutral low-level code that every other package may import; it imports nothing from the project.

* :mod:`core.errors`   the error hierarchy and the entry points' one-line error convention;
* :mod:`core.geometry` SE(3) / SO(3) maths (the only home of rotations, quaternions, pose errors);
* :mod:`core.frames`   the APR and NeRF frames and the conversions from the dataset frames;
* :mod:`core.camera`   the pinhole camera model (rays and projections);
* :mod:`core.triangulation` SIFT keypoints of posed views triangulated at their known poses;
* :mod:`core.defaults` default values shared by the config parser and the code that uses them.

Layering (``tests/test_layering.py``): ``core`` <- ``utils`` <- ``models``; ``core``, ``utils`` <- ``config``
<- ``dataset_loaders``; ``dm``, ``data``, ``bench`` and the entry scripts sit on top. ``models`` never imports
``config`` or ``dataset_loaders``, ``dataset_loaders`` never imports ``models``.
"""
