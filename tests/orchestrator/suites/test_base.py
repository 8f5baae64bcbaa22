"""The suites' shared batching (``orchestrator/suites/base.py``): one loop over sources in batches, used by
the suites (``translate_all``) and by the quantization probes (``ProbeSession.generate``)."""
from __future__ import annotations

import pytest

from backends.errors import InputTooLongError
from tests.orchestrator.suites.helpers import load_test_data


def test_generate_in_batches_is_each_batch_generated_in_order(tiny_model, tmp_path):
    from backends.model import ModelBundle
    from backends.registry import get_backend
    from orchestrator.suites.base import generate_in_batches

    bundle = ModelBundle.load(tiny_model("marian"))
    sources, _ = load_test_data(5)
    backend = get_backend("torch-fp32", max_new_tokens=6, max_source_length=8)
    backend.prepare(bundle, tmp_path / "art")
    with backend:
        seen = []
        tokens, cut = generate_in_batches(backend, bundle, sources, 2, progress=lambda d, t: seen.append((d, t)))
        want = []
        for i in (0, 2, 4):
            enc = bundle.encode_sources(sources[i:i + 2], 8)
            want += backend.generate(enc.input_ids, enc.attention_mask)
        assert tokens == want and len(tokens) == 5
        assert seen == [(2, 5), (4, 5), (5, 5)]
        assert cut == bundle.encode_sources(sources, 8).truncated > 0  # counted over every batch
        with pytest.raises(InputTooLongError):
            generate_in_batches(backend, bundle, sources, 2, strict=True)
        assert generate_in_batches(backend, bundle, [], 2) == ([], 0)
