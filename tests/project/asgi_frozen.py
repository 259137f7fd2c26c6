"""The test project's ASGI application with the ``gc.freeze()`` recipe of docs/performance.md.

``tests/multiprocess/test_gc_freeze.py`` runs it under daphne and checks that the lines
below the application import are the documented recipe, verbatim.
"""

from tests.project.asgi import application  # noqa: F401  (Django set up, the app built)

# isort: split
# -- recipe: end of asgi.py --
import gc

gc.collect()  # what start-up left as garbage is freed, not frozen for good
gc.freeze()  # start-up objects leave the collector's generations
# -- end of recipe --
