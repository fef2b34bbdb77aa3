"""Small byte-level BPE tokenizers trained locally, with a chat template.

Used by the tests (no hub) and by the demo's self-made base model. Real checkpoints bring their
own tokenizer; this one only needs to behave like a Hugging Face tokenizer: special tokens, a chat
template with {% generation %} markers (so assistant-only loss masks come from
apply_chat_template(..., return_assistant_tokens_mask=True)), save/load with from_pretrained.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, *ROLE_TOKENS]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>\n{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


# GPT-2's word split, except that hyphenated words ("amber-apple") stay one word and every digit is its own
# word, keeping the space before it (" 2" then "0"): a number's first digit is a token of its own kind.
COMPOUND_WORDS = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+(?:-\p{L}+)*| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, model_max_length: int = 4096,
                    split_digits: bool = False, compound_words: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` (any text encodes; nothing maps to <unk>).
    split_digits: one token per digit (as Llama 3 does for numbers), which makes copying numbers easy to learn.
    compound_words: hyphenated words are single words to BPE (frequent ones become one token) and digits
    are split one per token (split_digits is then implied)."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if compound_words:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(COMPOUND_WORDS), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=model_max_length,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
