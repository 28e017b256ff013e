"""The multi-task model: heads addressed by task name, save and reload."""

import pytest
import torch

from modeling_multi_bert import MultiTaskTagger, token_classification_loss


def test_heads_by_task_name_and_save_reload_gives_identical_outputs(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    labels = {"ner.v2": ["O", "B-PER"], "pos": ["NN", "VB", "DT"]}
    model = MultiTaskTagger.from_encoder(tiny_model_dir, labels).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    inputs = tokenizer([["john", "sees", "the", "dog"]], is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        _, ner_logits = model("ner.v2", inputs["input_ids"], inputs["attention_mask"])
        _, pos_logits = model("pos", inputs["input_ids"], inputs["attention_mask"])
    assert ner_logits.shape[-1] == 2 and pos_logits.shape[-1] == 3
    with pytest.raises(KeyError, match="no head for task 'chunking'"):
        model.head("chunking")

    model.save_pretrained(str(tmp_path), tokenizer)
    reloaded = MultiTaskTagger.from_pretrained(str(tmp_path)).eval()
    assert reloaded.task_labels == labels
    with torch.no_grad():
        _, reloaded_logits = reloaded("pos", inputs["input_ids"], inputs["attention_mask"])
    assert torch.equal(reloaded_logits, pos_logits)
    assert AutoTokenizer.from_pretrained(str(tmp_path))(["dog"], is_split_into_words=True)["input_ids"] == \
        tokenizer(["dog"], is_split_into_words=True)["input_ids"]


def test_loss_ignores_unlabelled_positions_and_is_zero_without_labels():
    logits = torch.randn(1, 3, 2, requires_grad=True)
    labels = torch.tensor([[-100, 1, -100]])
    loss = token_classification_loss(logits, labels)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits[0, 1:2], labels[0, 1:2]).item())
    empty = token_classification_loss(logits, torch.full((1, 3), -100))
    assert empty.item() == 0.0
    empty.backward()  # still differentiable
