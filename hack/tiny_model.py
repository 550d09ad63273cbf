"""Write a tiny random Llama with a word-level tokenizer to OUT_DIR (no downloads).

Every token is one whole English word (GPT-2 style: ByteLevel pre-tokenizer and decoder, each word
both bare and with the leading-space mark), so outputs are readable, prompts decode back exactly
and token counts are predictable: "The capital of France is" is 5 words + BOS = 6 tokens.
The lm_head rows of the special tokens and of the bare words are zeroed and the others scaled up,
so every generation, greedy or sampled, emits spaced words and runs to max_tokens.
Its chat template renders "User: Hi Assistant:" (roles capitalized, turns joined by spaces, BOS
first), so a one-message chat prompt is as predictable: 4 tokens more than the message's words.
Brackets and braces are tokens of their own, so grammar-guided decoding can write JSON.

Run it with the serving environment's python (it needs torch, transformers and tokenizers):
    "$(hack/serving-env.sh --print)/venv/bin/python" hack/tiny_model.py OUT_DIR

With ``--shape llama-8b`` it writes no weights, only the config of a Llama 3 8B-shaped model
(served with ``load_format: dummy``: random weights, nothing downloaded) and the same kind of
word-level tokenizer filled up to that model's 128,256 tokens with made-up letter words.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_WORD_TEXT = """
the of and to in is was it for on are with as at be this have from or one had by word but not what
all were we when your can said there use an each which she do how their if will up other about out
many then them these so some her would make like him into time has look two more write go see
number no way could people my than first water been call who oil its now find long down day did
get come made may part over new sound take only little work know place year live me back give most
very after thing our just name good sentence man think say great where help through much before
line right too mean old any same tell boy follow came want show also around form three small set
put end does another well large must big even such because turn here why ask went men read need
land different home us move try kind hand picture again change off play spell air away animal
house point page letter mother answer found study still learn should world high every near add
food between own below country plant last school father keep tree never start city earth eye light
thought head under story saw left few while along might close something seem next hard open
example begin life always those both paper together got group often run important until children
side feet car mile night walk white sea began grow took river four carry state once book hear stop
without second late miss idea enough eat face watch far really almost let above girl sometimes
mountain cut young talk soon list song being leave family capital France Paris red blue green
quick brown fox jumps lazy dog sun moon star model server token stream cat user assistant system
"""
WORDS = _WORD_TEXT.split()
PUNCTUATION = [".", ",", "!", "?", ":", ";", "'", '"', "-", "{", "}", "[", "]"]
SPACE = "\u0120"  # ByteLevel's mark for a leading space
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if not loop.first %} {% endif %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}"
    "{% endfor %}"
    "{% if add_generation_prompt %} Assistant:{% endif %}"
)


LLAMA_8B_VOCAB = 128256


def filler_word(index: int) -> str:
    """A made-up word of letters only ("zq" + base 26): ByteLevel splits letters from digits."""
    letters = ""
    while True:
        index, digit = divmod(index, 26)
        letters += chr(ord("a") + digit)
        if index == 0:
            return "zq" + letters


def build_tokenizer(vocab_size: int = 0):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(WORDS + [w.capitalize() for w in WORDS]))
    vocab: dict[str, int] = {}
    for token in [BOS, EOS, UNK, *PUNCTUATION, *words, *(SPACE + w for w in words)]:
        vocab.setdefault(token, len(vocab))
    filler = 0
    while len(vocab) < vocab_size:
        word = filler_word(filler)
        filler += 1
        for token in (SPACE + word, word):
            if len(vocab) < vocab_size:
                vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast, vocab


def build_model(vocab: dict[str, int], max_len: int):  # type: ignore[no-untyped-def]
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_len,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        head = model.lm_head.weight
        for token, index in vocab.items():
            if token.startswith(SPACE):
                head[index] *= 30.0
            else:
                head[index] = 0.0
    return model


def llama_8b_config(vocab: dict[str, int], max_len: int):  # type: ignore[no-untyped-def]
    """Llama 3 8B's shape; bfloat16. No weights: serve it with load_format "dummy"."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=max_len,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--max-len", type=int, default=8192)
    parser.add_argument("--shape", choices=["tiny", "llama-8b"], default="tiny")
    args = parser.parse_args()
    if args.shape == "llama-8b":
        tokenizer, vocab = build_tokenizer(LLAMA_8B_VOCAB)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        llama_8b_config(vocab, args.max_len).save_pretrained(args.out_dir)
        tokenizer.save_pretrained(args.out_dir)
        print(args.out_dir)
        return
    tokenizer, vocab = build_tokenizer()
    model = build_model(vocab, args.max_len)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out_dir)
    tokenizer.save_pretrained(args.out_dir)
    print(args.out_dir)


if __name__ == "__main__":
    main()
