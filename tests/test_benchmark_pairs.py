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


class SeesCallbacks(overhead.Intervals):
    """The timer, also noting which callbacks the Trainer runs."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.names = {type(c).__name__ for c in trainer.callbacks}


def test_cli_host_without_named_callbacks_runs_without_them_and_keeps_the_rest():
    from tiny import tiny_flags

    flags = {k: v for k, v in tiny_flags("ram").items() if k not in ("logger", "viz_images")}
    flags.update(num_workers=0, accelerator="cpu", seed=0, enable_model_summary=True)
    full, lean = SeesCallbacks(), SeesCallbacks()
    overhead.run_trainer(flags, "real", 4, 1, "cli", timer=full)
    result = overhead.run_trainer(flags, "real", 4, 1, "cli", timer=lean, without=frozenset({"ModelSummary",
                                                                                          "AttentionLogger"}))
    assert {"ModelSummary", "AttentionLogger", "LastCheckpoint"} <= full.names
    assert full.names - lean.names == {"ModelSummary", "AttentionLogger"}
    assert len(result["times"][0]) == 3  # 4 training batches: 3 start-to-start intervals, still timed
