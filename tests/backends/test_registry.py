import pytest

from backends import registry
from backends.errors import BackendUnavailableError, UnknownBackendError


def test_listing_imports_no_runtime():
    import subprocess
    import sys

    code = ("import sys, backends; from backends.registry import available_backends; "
            "names = available_backends(); "
            "heavy = [m for m in ('torch','tensorflow','onnxruntime','ctranslate2','ai_edge_litert') if m in sys.modules]; "
            "print(heavy); assert 'torch-fp32' in names")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(registry.__file__).rsplit("/backends/", 1)[0])
    assert out.stdout.strip() == "[]", out.stdout


def test_unknown_backend_lists_available():
    with pytest.raises(UnknownBackendError) as err:
        registry.get_backend("no-such-backend")
    assert "torch-fp32" in str(err.value)


def test_missing_extra_gives_pip_hint():
    registry.register_backend("needs-missing", "backends.torch_ref.backend:TorchSplitBackend",
                              requires=("definitely_not_a_module_xyz",), clobber=True)
    try:
        with pytest.raises(BackendUnavailableError) as err:
            registry.get_backend("needs-missing")
        assert "pip install" in str(err.value)
    finally:
        registry._registry.pop("needs-missing", None)


def test_duplicate_registration_refused():
    with pytest.raises(ValueError):
        registry.register_backend("torch-fp32", "x.y:Z")


def test_variant_options_and_unknown_option():
    be = registry.get_backend("torch-fp32-split", threads=1)
    assert be.threads == 1 and be.name == "torch-fp32-split"
    from backends.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="unknown option"):
        registry.get_backend("torch-fp32-split", bogus=3)
