"""Suites run on every backend: quality, split-generation, source-sensitivity, speed."""
from orchestrator.suites.base import SUITES, CompareContext, Suite, SuiteContext, get_suite

__all__ = ["SUITES", "CompareContext", "Suite", "SuiteContext", "get_suite"]
