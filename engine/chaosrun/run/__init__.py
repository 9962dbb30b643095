"""Run stage: the async runtime (trio), the only async code of chaosrun."""
