"""``TrainLog`` keeps each step's values and adds them to the epoch sums many steps at a time."""
import torch

from attention_lightning.models.train_log import Key, TrainLog

LOSS = Key("train/loss", True, None, True, True)
REWARD = Key("train/reward", False, None, True, True)


def run_steps(log: TrainLog, values: list[tuple[float, float]], sizes: list[int]) -> None:
    for (loss, reward), size in zip(values, sizes):
        log.add(LOSS, torch.tensor(loss), size)
        log.add(REWARD, torch.tensor([reward]), None)  # batch size taken from the batch
        log.end_step(None, (torch.zeros(size, 3), torch.zeros(size)), emit=False)


def test_epoch_sums_weighted_by_batch_size_whenever_they_are_folded():
    values = [(1.0, 0.5), (2.0, 0.25), (4.0, 1.0), (8.0, 0.0), (16.0, 0.75)]
    sizes = [4, 4, 4, 4, 2]  # the last batch is smaller
    want = [sum(v[0] * s for v, s in zip(values, sizes)), sum(v[1] * s for v, s in zip(values, sizes))]
    for every in (1, 3, 1024):  # a fold after each step, every few steps, only when the state is taken
        log = TrainLog()
        log.fold_every = every
        run_steps(log, values, sizes)
        state = log.state_dict()
        assert [k[0] for k in state["keys"]] == ["train/loss", "train/reward"]
        assert state["sums"].tolist() == want
        assert state["weights"] == [18.0, 18.0]


def test_a_value_changed_in_place_after_its_step_keeps_its_logged_value():
    log = TrainLog()
    p = torch.tensor(3.0)
    log.add(LOSS, p, 2)
    log.end_step(None, None, emit=False)
    p.fill_(100.0)  # e.g. a logged parameter, updated by the optimizer after the step
    assert log.state_dict()["sums"].tolist() == [6.0]


def test_a_resumed_log_continues_the_sums():
    log = TrainLog()
    run_steps(log, [(1.0, 1.0), (3.0, 0.0)], [2, 2])
    resumed = TrainLog()
    resumed.load_state_dict(log.state_dict())
    run_steps(resumed, [(5.0, 1.0)], [2])
    assert resumed.state_dict()["sums"].tolist() == [18.0, 4.0]
    assert resumed.weights == [6.0, 6.0]
