"""Test-session settings shared by every test file."""

import torch

# The tiny models' matrices are 64 x 96: one thread is fastest, and with several threads MKL's
# SVD waits on its barrier (0.4 s instead of 0.5 ms per call) whenever another process holds a core.
torch.set_num_threads(1)
