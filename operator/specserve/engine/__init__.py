"""What specserve knows of the engine it drives: vLLM's command line, speculative-config and metric names.

Pure knowledge of an external program; imports only the API.
"""
