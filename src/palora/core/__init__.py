"""Pure math and modules: the SVD, the SVF layer, the probe's scores and rules, projectors, the
orthogonal LoRA, subspace unions, answer checkers. No file I/O; nothing here imports from outside
``palora.core`` but :mod:`palora.errors`."""
