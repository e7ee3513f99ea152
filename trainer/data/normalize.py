"""Min-max normalisation: the runtime's implementation (runtime.normalize), re-exported for the trainer."""
from runtime.normalize import MinMax, minmax_scale_offset

__all__ = ["MinMax", "minmax_scale_offset"]
