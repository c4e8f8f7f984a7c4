"""Stand-ins built offline: tokenizers over small vocabularies, and models at a config's size with random weights.

A release's own vocabulary (CLIP's BPE merges, T5's SentencePiece model, BERT's WordPiece, Gemma's) needs the hub.
These stand-ins keep the class, the special tokens and the padding/truncation behaviour, so every prompt tokenizes
to the real sequence length (77 CLIP tokens, T5's 256 or 512, ...) with ids inside the model's vocabulary, only
character by character. Used by ``model.init=random`` / ``rewards.<name>.init=random`` and by the tiny test copies
(``python -m srsoup.testing.checkpoints``).

``random_module`` builds any diffusers or transformers model class from its config with random weights, directly on
the target device (on ``meta`` it takes no memory: sizes and shapes only).
"""

from __future__ import annotations

import torch


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character table (the alphabet of the byte-level BPE)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A CLIPTokenizer over CLIP's own alphabet (every byte, alone and word-final) with no merges: 514 tokens.

    Same pre-tokenization, specials and ``</w>`` convention as openai/clip-vit-large-patch14, so any prompt
    tokenizes without unknowns, just character by character.
    """
    from transformers import CLIPTokenizer

    chars = list(bytes_to_unicode().values())
    vocab = {
        t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])
    }
    return CLIPTokenizer(vocab=vocab, merges=[], pad_token=pad_token, model_max_length=77)


def t5_tokenizer():
    """A unigram T5 tokenizer over lowercase letters, digits and a few marks (SentencePiece-style ``▁``)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.'-"]
    pieces += [("▁" + c, -2.5) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=256)


def bert_tokenizer():
    """A BERT WordPiece over lowercase letters, digits and punctuation, each alone and as a ``##`` suffix."""
    import string

    from transformers import BertTokenizer

    chars = string.ascii_lowercase + string.digits
    tokens = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *chars,
        *string.punctuation,
        *("##" + c for c in chars),
    ]
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, model_max_length=512)


def gemma_tokenizer():
    """A Gemma tokenizer (the tokenizers-backed ``GemmaTokenizer``, alias ``GemmaTokenizerFast``) over printable
    ASCII and the 256 byte-fallback pieces, so any text tokenizes without unknowns, character by character.

    Gemma's special tokens at Gemma's ids (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, ``<mask>`` 4),
    a ``<bos>`` before every sequence and none after (Gemma's ``add_bos_token`` / ``add_eos_token``), spaces as
    ``▁``; right padding, which ``SanaPipeline`` sets before it tokenizes (Gemma's class default is left).
    """
    import string

    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    pieces = [*specials, *(f"<0x{b:02X}>" for b in range(256)), "▁", *string.ascii_letters, *string.digits]
    pieces += list(string.punctuation)
    return GemmaTokenizer(
        vocab={p: i for i, p in enumerate(pieces)},
        merges=[],
        add_bos_token=True,
        add_eos_token=False,
        padding_side="right",
    )


def standin_tokenizer(config: dict):
    """A stand-in for the tokenizer a ``tokenizer_config.json`` describes (class, max length, pad token)."""
    cls = str(config.get("tokenizer_class", ""))
    length = int(config.get("model_max_length", 77))
    if cls.startswith("CLIPTokenizer"):
        pad = config.get("pad_token") or "<|endoftext|>"
        tok = clip_tokenizer(pad_token=pad["content"] if isinstance(pad, dict) else pad)
    elif cls.startswith("T5Tokenizer"):
        tok = t5_tokenizer()
    elif cls.startswith("BertTokenizer"):
        tok = bert_tokenizer()
    elif cls.startswith("GemmaTokenizer"):  # GemmaTokenizer and GemmaTokenizerFast
        tok = gemma_tokenizer()
    else:
        raise ValueError(f"no tokenizer stand-in for {cls or 'an unnamed tokenizer class'}")
    tok.model_max_length = length
    return tok


def random_module(cls, config, device: torch.device | str | None = None, dtype=torch.float32, **kwargs):
    """``cls`` (a diffusers or transformers model class) built from ``config`` (a dict, or a transformers config)
    with random weights on ``device``, in ``dtype``, in eval mode; ``kwargs`` go to the constructor."""
    previous = torch.get_default_dtype()
    if dtype in (torch.float16, torch.bfloat16):
        torch.set_default_dtype(dtype)  # made in 16 bits: no transient fp32 copy (T5-XXL's would be 19 GB)
    try:
        with torch.device(device or "cpu"):
            if cls.__module__.startswith("transformers"):
                if isinstance(config, dict):
                    config = cls.config_class.from_dict(config)
                model = cls(config, **kwargs)
            else:
                model = cls.from_config(config, **kwargs)
    finally:
        torch.set_default_dtype(previous)
    if dtype != torch.float32:  # nn.Module.to: diffusers' own .to warns about modules kept in fp32
        model = torch.nn.Module.to(model, dtype=dtype)
    return model.eval()


def stored_numel(module: torch.nn.Module) -> int:
    """Elements of the tensors a checkpoint of ``module`` holds: parameters and saved buffers, tied ones once.

    Release files and the figures published for them count these; ``parameters()`` alone can differ: SD3's
    MMDiT keeps its fixed 384x384 sin-cos position table (226M elements) as a saved buffer.
    """
    unique = {id(t): t.numel() for t in module.state_dict(keep_vars=True).values()}
    return sum(unique.values())
