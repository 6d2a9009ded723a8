"""Hugging Face transformers models built from small configs (random init, no download):
``--arch gpt2|bert|t5|llama``; a language-modelling loss, AdamW."""

import argparse
import sys

import torch
from _loop import main

SEQ, BATCH, VOCAB = 16, 2, 128


def build(arch: str):
    import transformers as tf

    small = {"vocab_size": VOCAB}
    if arch == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=SEQ,
                                                **small))
    if arch == "bert":
        return tf.BertForMaskedLM(tf.BertConfig(hidden_size=64, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=128,
                                                max_position_embeddings=SEQ, **small))
    if arch == "t5":
        return tf.T5ForConditionalGeneration(tf.T5Config(
            d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, decoder_start_token_id=0,
            pad_token_id=0, **small))
    if arch == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=64, intermediate_size=128,
                                                  num_hidden_layers=2, num_attention_heads=4,
                                                  num_key_value_heads=2,
                                                  max_position_embeddings=SEQ, **small))
    raise SystemExit(f"unknown --arch {arch}")


def make(arch: str | None = None):
    if arch is None:
        arch = ARCH
    torch.manual_seed(0)
    model = build(arch)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    inputs = {"input_ids": ids, "labels": ids}
    if arch == "t5":
        inputs["labels"] = torch.randint(0, VOCAB, (BATCH, SEQ // 2))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()
        opt.step()
    return step


ARCH = "gpt2"

if __name__ == "__main__":
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--arch", default="gpt2")
    known, rest = pre.parse_known_args()
    ARCH = known.arch
    sys.argv = [sys.argv[0], *rest]
    main(make)
