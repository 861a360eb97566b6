"""``palora compare``: every method under one budget, on the same experts, several seeds."""
