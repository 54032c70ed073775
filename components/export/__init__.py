"""Export: the inference path as ONNX, checked against torch with ONNX Runtime, written as a bundle."""

from components.export.onnx_export import ExportConfig, ParityReport, check_parity, export_onnx, known_user_histories, write_bundle
from components.export.quantize import KeptPrecision, QuantizationReport, keep_source_precision, quantize_graph, quantize_int8

__all__ = [
    "ExportConfig", "KeptPrecision", "ParityReport", "QuantizationReport", "check_parity", "export_onnx", "keep_source_precision",
    "known_user_histories", "quantize_graph", "quantize_int8", "write_bundle",
]
