"""The machine description reports, manifests and baselines carry."""
from backends.machine import ISA_FLAGS, build_identity, cpu_flags, cpu_model, describe, differences


def test_describe_reads_cpuinfo_and_meminfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n"
                    "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni\n\nprocessor\t: 1\n")
    mem = tmp_path / "meminfo"
    mem.write_text("MemTotal:       24641536 kB\nMemFree:  1 kB\n")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    d = describe(info, mem)
    assert d["cpu"] == "AMD EPYC 9B14" and d["memory_gb"] == 23.5
    assert d["isa"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni"]  # ISA_FLAGS order, no fpu
    assert d["dispatch_env"] == {"ONEDNN_MAX_CPU_ISA": "SSE41"}
    assert set(build_identity(d)) == {"cpu", "arch", "isa", "dispatch_env"}
    assert cpu_flags(info) >= {"fpu", "avx512_vnni"} and set(d["isa"]) <= set(ISA_FLAGS)


def test_missing_proc_files_give_unknowns_not_errors(tmp_path):
    d = describe(tmp_path / "none", tmp_path / "none")
    assert d["isa"] == [] and d["memory_gb"] is None and isinstance(d["cpu"], str)
    assert cpu_flags(tmp_path / "none") == set()
    (tmp_path / "vendor").write_text("vendor_id\t: GenuineIntel\n")
    assert cpu_model(tmp_path / "vendor") == "GenuineIntel"


def test_differences_in_words():
    a = {"cpu": "A", "arch": "x86_64", "cores": 2, "isa": ["avx2", "avx512f"], "dispatch_env": {}}
    b = {**a, "cores": 4, "isa": ["avx2", "amx_tile"], "dispatch_env": {"ONEDNN_MAX_CPU_ISA": "AVX2"}}
    assert differences(a, a) == [] and differences(a, None) == [] and differences(None, b) == []
    assert differences(a, b) == ["cores 2 -> 4", "isa -avx512f +amx_tile",
                                 "dispatch_env {} -> {'ONEDNN_MAX_CPU_ISA': 'AVX2'}"]
    assert differences(a, b, ("cpu", "isa")) == ["isa -avx512f +amx_tile"]
