"""Multi-modal datasets: a user's own folder, the MMKGC benchmarks and the built-in synthetic graph.

``pykeen.datasets`` is imported here, before any of our dataset modules: it loads the ``pykeen.datasets``
entry points (ours among them) at the end of its import, and a dataset module it found half imported
(because importing that module is what imported ``pykeen.datasets``) would be skipped, unregistered.
"""

import pykeen.datasets  # noqa: F401
