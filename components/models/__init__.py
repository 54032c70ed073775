"""Model families, one file each (config dataclass + the whole forward pass)."""
