"""The presets shipped with torchzebra (YAML files in this folder)."""

PRESETS = ("quick", "paper")  # quick: the 2-core CPU reference; paper: paper scale, for a GPU
