"""Export: the inference path as ONNX, checked against torch with ONNX Runtime, written as a bundle."""

from components.export.onnx_export import ExportConfig, ParityReport, check_parity, export_onnx, write_bundle

__all__ = ["ExportConfig", "ParityReport", "check_parity", "export_onnx", "write_bundle"]
