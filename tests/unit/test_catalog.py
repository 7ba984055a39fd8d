"""The packaged catalogs: GPU products, model architectures, and how model references find them."""

import pytest

from specserve import api, catalog
from tests.helpers import EXAMPLES, load_example

ISSUE_GPUS = ["A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100-80GB", "H200-141GB", "B200"]


def example_models():
    for path in EXAMPLES:
        spec = api.SpeculativeServing.model_validate(load_example(path)).spec
        yield spec.target.model
        yield from (v.model for v in spec.target.variants)
        if spec.speculation.draft is not None:
            yield spec.speculation.draft.model


def test_every_gpu_product_of_the_issue_is_catalogued():
    assert all(catalog.gpu_product(name) is not None for name in ISSUE_GPUS)


def test_checkpoint_names_are_unique_across_architectures():
    names = [catalog.checkpoint_name(cid) for a in catalog.model_architectures().values() for cid in a.checkpoints]
    assert len(names) == len(set(names))


def test_every_architecture_states_weights_layers_and_kv_shape():
    for a in catalog.model_architectures().values():
        assert a.parameters_billions and a.layers and a.max_context and a.tokenizer_family, a.name
        assert a.latent_attention or (a.kv_heads and a.head_dim), a.name


def test_eagle_heads_name_a_catalogued_target():
    heads = [a for a in catalog.model_architectures().values() if a.kind in ("eagle", "eagle3")]
    assert {h.trained_for for h in heads} == {"llama-3.1-8b", "llama-3.1-70b"}
    assert {h.kind for h in heads} == {"eagle", "eagle3"}


@pytest.mark.parametrize("model", sorted(set(example_models())))
def test_every_example_model_is_in_the_catalog(model):
    assert catalog.model_architecture(model) is not None


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8", "llama-3.1-70b"),
        ("Qwen/Qwen2.5-72B-Instruct-AWQ", "qwen2.5-72b"),
        ("Qwen/Qwen2.5-72B-Instruct-GPTQ-Int8", "qwen2.5-72b"),
        ("RedHatAI/Llama-3.3-70B-Instruct-FP8-dynamic", "llama-3.1-70b"),
        ("neuralmagic/Meta-Llama-3.1-8B-Instruct-quantized.w4a16", "llama-3.1-8b"),
    ],
)
def test_quantized_checkpoints_match_once_quantization_words_are_stripped(ref, name):
    assert catalog.model_architecture(ref).name == name


def test_hf_prefix_and_paths_match_by_their_last_segment():
    assert catalog.model_architecture("hf://meta-llama/Llama-3.1-8B-Instruct").name == "llama-3.1-8b"
    assert catalog.model_architecture("pvc://weights/models/Llama-3.1-8B-Instruct/").name == "llama-3.1-8b"
    assert catalog.model_architecture("/models/qwen2.5-7b-instruct").name == "qwen2.5-7b"


def test_names_that_only_resemble_a_catalogued_model_are_not_guessed():
    assert catalog.model_architecture("someorg/Llama-3.1-8B-Instruct-merged") is None
    assert catalog.model_architecture("Llama-3.1-8B") is not None
    assert catalog.model_architecture("Llama-3.1-9B") is None


@pytest.mark.parametrize(
    ("ref", "precision"),
    [
        ("Qwen/Qwen2.5-72B-Instruct-AWQ", "int4"),
        ("Qwen/Qwen2.5-72B-Instruct-GPTQ-Int8", "int8"),
        ("neuralmagic/Meta-Llama-3.1-70B-Instruct-FP8", "fp8"),
        ("nvidia/Llama-3.1-8B-Instruct-NVFP4", "fp4"),
        ("meta-llama/Llama-3.1-8B-Instruct", None),
    ],
)
def test_checkpoint_names_state_their_precision(ref, precision):
    assert catalog.name_precision(ref) == precision


def test_deepseek_v3_ships_fp8_with_an_mtp_module():
    deepseek = catalog.model_architecture("deepseek-ai/DeepSeek-V3")
    assert deepseek.precision == "fp8" and deepseek.mtp is not None and deepseek.latent_attention is not None
