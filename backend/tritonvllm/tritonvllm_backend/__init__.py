"""Helpers of the tritonvllm backend that do not need Triton: contract, config, parsing, shaping."""
