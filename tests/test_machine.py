"""igsearch.machine reads the CPU's kind and flags from /proc/cpuinfo: exact field names (``model`` is not
``model name``), the family and model numbers that tell CPUs with one bare name apart."""

from __future__ import annotations

from igsearch import machine

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse avx2 fma
"""

# a layout where "model name" comes first: a prefix match would read it for "model"
XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
cpu family\t: 6
model\t\t: 143
flags\t\t: avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8
"""


def test_cpu_kind_names_family_and_model_and_reads_fields_exactly(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(machine, "CPUINFO", info)
    info.write_text(ZEN3)
    assert machine.cpu_kind() == "AMD EPYC (family 25, model 1)"
    assert machine.cpu_avx512_flags() == [] and machine.cpu_amx_flags() == []
    assert machine.describe_cpu().startswith("AMD EPYC (family 25, model 1), no AVX-512, no AMX, ")
    info.write_text(XEON)
    assert machine.cpu_kind() == "Intel(R) Xeon(R) Platinum 8481C (family 6, model 143)"
    assert machine.cpu_avx512_flags() == ["avx512_bf16", "avx512f"]
    assert "AMX (amx_bf16, amx_int8, amx_tile)" in machine.describe_cpu()
    info.write_text("model name\t: Some CPU\n")  # no family: the bare name
    assert machine.cpu_kind() == "Some CPU"
