"""Where a stage runs: in this process (LocalExecutor) or on Ray workers (RayExecutor), under one run-wide limiter."""
