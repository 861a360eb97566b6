"""The methods, one file each (:mod:`.base` says what a method declares, :mod:`.registry` lists them)."""
