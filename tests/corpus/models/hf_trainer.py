"""Hugging Face ``Trainer`` fine-tuning a tiny GPT-2 (from a config, random init) on random
token ids: the training loop, optimizer (AdamW) and scheduler are the Trainer's own."""

import argparse
import tempfile

import torch

SEQ, BATCH, VOCAB = 16, 2, 128


def build_model():
    import transformers as tf

    return tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=SEQ,
                                            vocab_size=VOCAB))


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def reference():
    """One forward + backward of the same model on one batch: what one Trainer step computes."""
    torch.manual_seed(0)
    model = build_model()
    model.train()
    ids = RandomTokens(BATCH).ids

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
    return step


def main() -> None:
    import transformers as tf

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    steps = parser.parse_args().steps
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as out:
        args = tf.TrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=BATCH,
            learning_rate=1e-4, report_to=[], save_strategy="no", logging_strategy="no",
            use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0)
        tf.Trainer(model=build_model(), args=args,
                   train_dataset=RandomTokens(BATCH * steps)).train()
    print(f"done {steps} steps")


if __name__ == "__main__":
    main()
