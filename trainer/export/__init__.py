"""ONNX export, int8 quantisation, parity report and package writing (``imle-export``)."""
from trainer.export.exporter import ExportOptions, export_package
from trainer.export.observations import Calibration, ObservationSet, from_checkpoint_data, random_calibration
from trainer.export.onnx_export import ExportError
from trainer.export.quantize import QuantConfig
from trainer.export.synthetic import checkpoint_state
from trainer.export.writer import derive_package

__all__ = ["ExportOptions", "export_package", "Calibration", "ObservationSet", "from_checkpoint_data",
           "random_calibration", "ExportError", "QuantConfig", "checkpoint_state", "derive_package"]
