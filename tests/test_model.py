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


def _tiny_encoder(kind, dropout=0.1):
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    shape = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if kind == "bert":
        return BertModel(BertConfig(**shape), add_pooling_layer=False)
    if kind == "roberta":  # positions count from the padding index: the embeddings must see the padded ids
        return RobertaModel(RobertaConfig(pad_token_id=1, **shape), add_pooling_layer=False)
    return DistilBertModel(DistilBertConfig(vocab_size=40, dim=32, n_layers=2, n_heads=2, hidden_dim=64))


def _padded_batch(pad_token_id):
    lengths = [9, 3, 6, 1]
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 40, (len(lengths), max(lengths)), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
    input_ids[attention_mask == 0] = pad_token_id
    labels = torch.randint(0, 3, input_ids.shape, generator=generator)
    labels[attention_mask == 0] = -100
    labels[:, 0] = -100  # [CLS]
    return input_ids, attention_mask, labels


@pytest.mark.parametrize("path", ["unpadded", "bucketed"])
@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_own_forward_paths_give_the_encoders_own_states_loss_and_gradient(kind, path):
    model = MultiTaskTagger(_tiny_encoder(kind), {"pos": ["a", "b", "c"]}, forward_path=path).eval()
    assert model.forward_path == path and model.unpadded == (path == "unpadded")
    input_ids, attention_mask, labels = _padded_batch(model.encoder.config.pad_token_id)
    real = attention_mask.bool()

    def states_loss_gradient(forward_path):
        model.forward_path = forward_path
        states = model.encode(input_ids, attention_mask)
        loss, _ = model.classify("pos", states, labels)
        return states.detach(), loss.item(), torch.autograd.grad(loss, model.encoder_parameters(), allow_unused=True)

    states, loss, gradient = states_loss_gradient(path)
    own_states, own_loss, own_gradient = states_loss_gradient("encoder")
    assert torch.allclose(states[real], own_states[real], atol=1e-5)
    if path == "unpadded":
        assert torch.count_nonzero(states[~real]) == 0  # padded positions are left out, not computed
    assert loss == pytest.approx(own_loss, rel=1e-6)
    for ours, own in zip(gradient, own_gradient):
        if own is None:
            assert ours is None or torch.count_nonzero(ours) == 0
        else:
            assert torch.allclose(ours, own, atol=1e-6)


def test_bucketed_batches_have_few_shapes_and_the_same_loss():
    """Bucketed collation pads to a multiple of 16 positions and to the full batch: the loss is the one
    of the batch padded to its longest sentence (added rows and positions carry no label)."""
    from utils_cross_task import Feature

    model = MultiTaskTagger(_tiny_encoder("bert", dropout=0.0), {"pos": ["a", "b", "c"]}, forward_path="bucketed")
    generator = torch.Generator().manual_seed(2)
    features = [Feature(torch.randint(5, 40, (length,), generator=generator).tolist(),
                        [-100] + torch.randint(0, 3, (length - 2,), generator=generator).tolist() + [-100], row, [])
                for row, length in enumerate([9, 3, 17])]
    batch = model.collate_batch(features, 0, rows=5)
    assert batch["input_ids"].shape == (5, 32) and "token_index" not in batch
    assert (batch["attention_mask"][3:].sum(dim=1) == 1).all() and (batch["labels"][3:] == -100).all()
    shapes = {tuple(model.collate_batch(features[:count], 0, rows=5)["input_ids"].shape) for count in (1, 2, 3)}
    assert shapes == {(5, 16), (5, 32)}
    model.forward_path = "unpadded"
    unpadded = model.collate_batch(features, 0, rows=5)
    assert unpadded["input_ids"].shape == (3, 17)
    assert torch.equal(unpadded["token_index"], unpadded["attention_mask"].reshape(-1).nonzero().squeeze(1))
    losses = []
    for path, collated in (("bucketed", batch), ("unpadded", unpadded)):
        model.forward_path = path
        loss, _ = model("pos", collated["input_ids"], collated["attention_mask"], collated["labels"],
                        collated.get("token_index"))
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_unpadded_forward_keeps_dropout_in_training_and_falls_back_for_other_encoders():
    model = MultiTaskTagger(_tiny_encoder("bert", dropout=0.3), {"pos": ["a", "b"]})
    input_ids, attention_mask, _ = _padded_batch(0)
    real = attention_mask.bool()
    model.train()
    first, second = model.encode(input_ids, attention_mask), model.encode(input_ids, attention_mask)
    assert not torch.allclose(first[real], second[real])
    model.eval()
    assert torch.equal(model.encode(input_ids, attention_mask), model.encode(input_ids, attention_mask))

    assert MultiTaskTagger(_tiny_encoder("bert"), {"pos": ["a"]}, unpadded=False).forward_path == "encoder"
    other = MultiTaskTagger(_tiny_encoder("distilbert"), {"pos": ["a", "b"]}, forward_path="bucketed").eval()
    assert other.forward_path == "encoder"  # not BERT-shaped: its own forward
    _, logits = other("pos", input_ids, attention_mask)
    assert logits.shape == (*input_ids.shape, 2)


def test_a_half_precision_checkpoint_is_trained_in_float32(tmp_path):
    encoder = _tiny_encoder("bert").to(torch.bfloat16)
    encoder.save_pretrained(str(tmp_path))
    model = MultiTaskTagger.from_encoder(str(tmp_path), {"pos": ["a", "b"]})
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}
    assert model.unpadded
