"""seqquant orchestrator: data, matrices, suites, isolation, reports, verdicts, selection."""
