"""Tiny Hugging Face model folders, one per family, built from each architecture's own config class with random weights
and saved with save_pretrained, as a user's folder would be (no weights come from a hub)."""

from __future__ import annotations

import json
from pathlib import Path

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _vit(T):
    config = T.ViTConfig(image_size=32, patch_size=8, num_labels=3, **SMALL)
    return T.ViTForImageClassification(config), {
        "image_processor_type": "ViTImageProcessor",
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "size": {"height": 32, "width": 32},
    }


def _resnet(T):
    return T.ResNetForImageClassification(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)), {
        "crop_size": {"height": 64, "width": 64},
        "do_center_crop": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }


def _convnext(T):
    config = T.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3, image_size=32)
    return T.ConvNextForImageClassification(config), None


def _wav2vec2(T):
    config = T.Wav2Vec2Config(
        vocab_size=12,
        conv_dim=(8, 8),
        conv_stride=(5, 2),
        conv_kernel=(10, 3),
        num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2,
        **SMALL,
    )
    return T.Wav2Vec2ForCTC(config), {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "sampling_rate": 1600,
        "do_normalize": True,
    }


def _whisper(T):
    config = T.WhisperConfig(
        vocab_size=64,
        num_mel_bins=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        d_model=32,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=50,
        max_target_positions=64,
        decoder_start_token_id=1,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=1,
        suppress_tokens=[],
        begin_suppress_tokens=[],
        init_std=0.2,
    )
    return T.WhisperForConditionalGeneration(config), {"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 16}


def _bart(T):
    config = T.BartConfig(
        vocab_size=64,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        init_std=0.2,
    )
    return T.BartForConditionalGeneration(config), None


def _t5(T):
    config = T.T5Config(
        vocab_size=64,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T.T5ForConditionalGeneration(config), None


def _clip(T):
    config = T.CLIPConfig(
        text_config={"vocab_size": 64, "max_position_embeddings": 32, **SMALL},
        vision_config={"image_size": 32, "patch_size": 8, **SMALL},
        projection_dim=16,
    )
    return T.CLIPModel(config), None


def _gpt2(T):
    config = T.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=64, initializer_range=0.2)
    return T.GPT2LMHeadModel(config), None


def _llama(T):
    config = T.LlamaConfig(vocab_size=64, num_key_value_heads=1, max_position_embeddings=64, initializer_range=0.2, **SMALL)
    return T.LlamaForCausalLM(config), None


FAMILIES = {
    "vit": _vit,
    "resnet": _resnet,
    "convnext": _convnext,
    "wav2vec2": _wav2vec2,
    "whisper": _whisper,
    "bart": _bart,
    "t5": _t5,
    "clip": _clip,
    "gpt2": _gpt2,
    "llama": _llama,
}


def hf_folder(name: str, root: Path) -> Path:
    """The family's tiny model saved under ``root/name`` (seeded: the same weights every time)."""
    import torch
    import transformers as T

    T.utils.logging.set_verbosity_error()
    T.utils.logging.disable_progress_bar()
    folder = root / name
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    model, preprocessor = FAMILIES[name](T)
    model.eval().save_pretrained(folder)
    if name == "bart":  # generation rules a real checkpoint has (bart-large-cnn: no_repeat_ngram_size 3, min_length 56)
        path = folder / "generation_config.json"
        rules = {"no_repeat_ngram_size": 2, "repetition_penalty": 1.3, "min_new_tokens": 3, "bad_words_ids": [[7]]}
        path.write_text(json.dumps({**json.loads(path.read_text()), **rules}))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder
