"""Speed benchmarks and the leaderboard, each run as ``python -m benchmarks.<name>`` from the repository root."""
