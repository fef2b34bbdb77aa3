"""A tiny Llama written as a GGUF file the way llama.cpp writes one (tensor names, q/k row order,
Q8_0 blocks, a byte-level BPE tokenizer with a chat template in the metadata), so the GGUF path
(transformers' loader, the conversion, the checksum) is tested without the real 93 MB file."""

from __future__ import annotations

import hashlib

import numpy as np

GGUF_NAMES = {  # transformers name (inside model.layers.N.) -> llama.cpp name (inside blk.N.)
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def _llama_cpp_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for q/k (convert_hf_to_gguf.py's permute); transformers' loader undoes it."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def write_tiny_gguf(path, model, tokenizer, chat_template: bool = True) -> str:
    """Write `model` (a tiny LlamaForCausalLM with tied embeddings) and `tokenizer` (difflora's local
    byte-level BPE, with its chat template unless chat_template=False) to `path` as GGUF; 2-D weights
    in Q8_0 blocks, norms in float32. Returns the sha256."""
    import gguf

    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    _add_tokenizer(writer, tokenizer, chat_template)

    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    tensors = {"token_embd.weight": state["model.embed_tokens.weight"],
               "output_norm.weight": state["model.norm.weight"]}
    for i in range(config.num_hidden_layers):
        for hf, cpp in GGUF_NAMES.items():
            weight = state[f"model.layers.{i}.{hf}.weight"]
            if cpp == "attn_q":
                weight = _llama_cpp_permute(weight, config.num_attention_heads)
            elif cpp == "attn_k":
                weight = _llama_cpp_permute(weight, config.num_key_value_heads)
            tensors[f"blk.{i}.{cpp}.weight"] = weight
    for name, weight in tensors.items():
        if weight.ndim == 2:
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(name, gguf.quants.quantize(weight, q8), raw_dtype=q8)
        else:
            writer.add_tensor(name, weight.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sha256_of(path)


def _add_tokenizer(writer, tokenizer, chat_template: bool) -> None:
    import json

    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    vocab = model["vocab"]
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control, 1: normal
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    if chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
