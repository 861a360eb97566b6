"""``svf``: nothing injected, the SVF expert alone: the skill's ceiling and the recall floor.

Its row is the one every other row's retention is measured against (same seed, same split).
"""

from .base import Method

METHOD = Method("svf", "the SVF expert alone, nothing injected (the skill's ceiling)", build=None, lr_family="none",
                for_expert=False)
