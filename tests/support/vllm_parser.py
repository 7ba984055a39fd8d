"""The real vLLM (0.33, CPU install) as a judge of rendered command lines: its `vllm serve` parser and
SpeculativeConfig. Import fails loudly under CI=true when vllm is missing; elsewhere tests skip.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any, get_args

import pytest

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")  # no GPU here; the parser's device default needs a platform


class Rejected(ValueError):
    """vLLM would refuse this (argparse exit 2, a pre-start check, or a config validation error)."""


def require_vllm() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        message = f"the real vllm package is not installed ({error}); run scripts/install-vllm-cpu.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@functools.cache
def _serve_parser() -> tuple[argparse.ArgumentParser, Any]:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class RaisingParser(FlexibleArgumentParser):
        def print_usage(self, file: Any = None) -> None:
            if file is not sys.stderr:
                super().print_usage(file)

        def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
            raise Rejected((message or "").strip() or f"argparse exit {status}")

    root = RaisingParser(prog="vllm")  # built the way vllm's own CLI main() builds it
    command = ServeSubcommand()
    command.subparser_init(root.add_subparsers(required=False, dest="subparser")).set_defaults(dispatch_function=command.cmd)
    return root, command


def parse_serve_args(args: list[str]) -> argparse.Namespace:
    root, command = _serve_parser()
    namespace = root.parse_args(["serve", *args])
    try:
        command.validate(namespace)
    except (TypeError, ValueError) as error:
        raise Rejected(str(error)) from error
    return namespace


@functools.cache
def _fields_only_config() -> type:
    """SpeculativeConfig with its fields, bounds and validators, minus the set-up that loads model configs."""
    from vllm.config import SpeculativeConfig
    from vllm.config.utils import config

    class FieldsOnly(SpeculativeConfig):
        def __post_init__(self) -> None:
            if self.model is None and self.method not in ("mtp", "ngram", "ngram_gpu", "suffix"):
                raise ValueError(f"method {self.method!r} needs a model")

    return config(FieldsOnly)


def validate_speculative_config(config: dict[str, Any]) -> None:
    """The real SpeculativeConfig for ngram (it needs no model); field-level validation for the rest."""
    from vllm.config import SpeculativeConfig
    from vllm.v1.spec_decode.dynamic.utils import validate_and_normalize_dynamic_sd_schedule

    cls = SpeculativeConfig if config.get("method") == "ngram" else _fields_only_config()
    try:
        cls(**config)
        if config.get("num_speculative_tokens_per_batch_size") is not None:
            validate_and_normalize_dynamic_sd_schedule(config["num_speculative_tokens_per_batch_size"])
    except (ValueError, TypeError) as error:
        raise Rejected(str(error)) from error


def known_quantizations() -> set[str]:
    from vllm.model_executor.layers.quantization import QuantizationMethods

    return set(get_args(QuantizationMethods))


def known_kv_cache_dtypes() -> set[str]:
    from vllm.config.cache import CacheDType

    return set(get_args(CacheDType))
