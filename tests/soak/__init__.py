"""The soak at its short setting (soak/ is the tool)."""
