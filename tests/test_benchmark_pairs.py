"""``benchmarks.overhead.Guests``: a guest loop's step runs at each host batch start and is left out of the host's
interval; each host interval is paired with the guest step that ran just before it."""
from benchmarks import overhead


def test_guest_steps_are_paired_with_host_steps_and_left_out_of_them(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(overhead, "clocks", lambda: (now[0], now[0]))

    def guest():
        while True:
            now[0] += 5.0  # a guest step costs 5
            yield

    timer = overhead.Guests({"plain": guest()})
    for epoch in range(2):
        timer.on_train_epoch_start(None, None)
        for i in range(3):
            timer.on_train_batch_start(None, None, None, i)
            now[0] += 2.0 + epoch  # the host's step: 2 in epoch 0, 3 in epoch 1
    # per epoch, 2 complete host intervals (the last step has no next start), each beside one guest step
    assert timer.pairs == [[{"host": (2.0, 2.0), "plain": (5.0, 5.0)}] * 2, [{"host": (3.0, 3.0), "plain": (5.0, 5.0)}] * 2]
    assert timer.times == [[(2.0, 2.0)] * 2, [(3.0, 3.0)] * 2]


def test_endless_steps_over_epochs_one_batch_per_next():
    seen = []
    steps = overhead.endless([1, 2], seen.append)
    for _ in range(5):
        next(steps)
    assert seen == [1, 2, 1, 2, 1]
