"""Recipes: each stage reads ``setup -> train -> save`` top to bottom; they do the I/O."""
