"""The paradigm scripts give the numbers they gave before TAWT's update ran through `tawt.TAWT`.

The values below were recorded with the scripts' own update code (weighted_training_basics.py before it used
the public API), on the tiny fixtures: the weights after every update and the main task's test predictions
and every task's test loss. A change that moves any of them changes results; one that moves none does not.
"""

import json

import pytest

import run_weighted_joint
import run_weighted_pretraining
from tests.test_scripts import common

# Updates within the epochs too (every 3 steps), each from the mean gradient of 2 sampled batches per task.
JOINT = ["--auxiliary_task_list", "ner", "chunking", "--main_task", "pos", "--weight_lr", "0.3",
         "--main_task_train_sent_num", "10", "--gradient_sampling_batch_size", "8", "--gradient_sampling_batches", "2",
         "--weight_update_steps", "3"]
JOINT_STAGES = [["initial", 0, 0], ["step", 1, 3], ["step", 1, 6], ["epoch", 1, 8], ["step", 2, 9], ["step", 2, 12],
                ["step", 2, 15], ["epoch", 2, 16]]
JOINT_WEIGHTS = [
    [0.3333333333333333, 0.3333333333333333, 0.3333333333333333],
    [0.2963389741718655, 0.3032894246372215, 0.4003716011909129],
    [0.25711879815061184, 0.271045455603185, 0.47183574624620317],
    [0.21698421401454912, 0.23758138647145716, 0.5454343995139938],
    [0.18009934721554566, 0.20289707241706734, 0.617003580367387],
    [0.14559483116528651, 0.1695781056843619, 0.6848270631503516],
    [0.11476543377068932, 0.13941555750144086, 0.7458190087278698],
    [0.08845567883591147, 0.11264338107013777, 0.7989009400939509],
]
JOINT_PREDICTIONS = ["DT DT DT VBZ DT NNP NN", ". NN NN DT NN", ". DT DT NN NN", "NN DT NN DT NN",
                     "DT NN DT NN NN NN DT", "DT JJ DT NN DT VBZ NN", "NN JJ DT NNP DT NN NN", "DT DT DT NN DT NNP NN"]
JOINT_TEST_LOSSES = {"ner_test": 0.9503218841552734, "chunking_test": 1.3047802734375, "pos_test": 1.721034393310547}

# Weighted pre-training: each update fits a copy of the main head on the frozen encoder first.
PRETRAINING = ["--auxiliary_task_list", "pos", "chunking", "--main_task", "ner", "--main_task_train_sent_num", "10",
               "--gradient_sampling_batch_size", "8", "--inv_constant", "10"]
PRETRAINING_STAGES = [["initial", 0, 0], ["epoch", 1, 6], ["epoch", 2, 12]]
PRETRAINING_WEIGHTS = [[0.5, 0.5], [0.2513226099702181, 0.748677390029782], [0.10750781516755845, 0.8924921848324416]]
PRETRAINING_PREDICTIONS = ["O O O O B-PER B-PER B-PER", "O O O B-PER B-PER", "O O O O O", "O O O O B-PER",
                           "O O O O B-PER B-PER B-GPE", "O O O B-PER O O B-PER", "B-GPE O O B-PER B-PER O B-PER",
                           "O O O B-PER O B-PER B-PER"]
PRETRAINING_TEST_LOSSES = {"pos_test": 1.676732177734375, "chunking_test": 1.2870449829101562,
                           "ner_test": 1.0106160736083984}


def predicted_sentences(path):
    """The predicted labels of each sentence of a predictions file, space-separated."""
    sentences, sentence = [], []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("-DOCSTART-"):
            sentence.append(line.split()[-1])
        elif sentence:
            sentences.append(" ".join(sentence))
            sentence = []
    return sentences + ([" ".join(sentence)] if sentence else [])


@pytest.mark.parametrize("script, arguments, stages, weights, predictions, test_losses", [
    (run_weighted_joint, JOINT, JOINT_STAGES, JOINT_WEIGHTS, JOINT_PREDICTIONS, JOINT_TEST_LOSSES),
    (run_weighted_pretraining, PRETRAINING, PRETRAINING_STAGES, PRETRAINING_WEIGHTS, PRETRAINING_PREDICTIONS,
     PRETRAINING_TEST_LOSSES),
], ids=["weighted_joint", "weighted_pretraining"])
def test_weighted_runs_give_the_recorded_results(tiny_data_dir, tiny_model_dir, tmp_path, script, arguments, stages,
                                                 weights, predictions, test_losses):
    output = tmp_path / "run"
    summary = script.main(common(tiny_data_dir, tiny_model_dir, output) + arguments)
    with open(output / "task_weights.json") as handle:
        history = json.load(handle)["history"]
    assert [[entry["stage"], entry["epoch"], entry["step"]] for entry in history] == stages
    for entry, recorded in zip(history, weights):
        assert entry["weights"] == pytest.approx(recorded, abs=1e-6), entry["stage"]
    main_task = arguments[arguments.index("--main_task") + 1]
    assert predicted_sentences(output / f"{main_task}_test_predictions.txt") == predictions
    assert {name: scores["loss"] for name, scores in summary.items() if name.endswith("_test")} == \
        pytest.approx(test_losses, abs=1e-6)
