"""benchmarks/gpu_check.sh and the table/JSON assembly of benchmarks/gpu_check.py, without a GPU: the wrapper's
argument handling and its fail-fast paths (no nvidia-smi, a failing one, an environment without the gpu extra),
its part loop on a stand-in interpreter, and the checks computed from hand-made measurements."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402

SCORING = {"pairs": 800, "contexts": 16, "candidates": 50, "max_length": 256, "adapter_effect_max_abs": 0.23,
           "bf16": {"hf_pairs_per_s": 400.0, "vllm_pairs_per_s": 2000.0, "vllm_startup_s": 41.5,
                    "pairs": 800, "max_abs_diff": 0.021, "mean_abs_diff": 0.004, "tolerance": 1e-3,
                    "within_tolerance": False},
           "fp32": {"pairs": 800, "max_abs_diff": 6e-6, "mean_abs_diff": 1e-6, "tolerance": 1e-3,
                    "within_tolerance": True}}
PREFIX = {"pairs": 800, "contexts": 16, "candidates": 50, "prompt_tokens": 204_800, "tokens_prefix_once": 66_784,
          "caching_on": {"pairs_per_s": 3000.0, "startup_s": 30.0},
          "caching_off": {"pairs_per_s": 1200.0, "startup_s": 28.0}, "max_abs_diff_on_off": 0.004}
EMBEDDING = {"texts": 2755, "repeats": 3, "max_abs_diff_between_batches": 2e-7,
             "batches": {"64": {"texts_per_s": 5000.0, "seconds": [0.55, 0.551, 0.56]},
                         "256": {"texts_per_s": 8000.0, "seconds": [0.34, 0.344, 0.35]}}}
DEEPSPEED = {"contexts": 1287, "valid_contexts": 200, "batch_size": 32, "max_length": 128,
             "runs": {"deepspeed_zero2": {"samples_per_s": 300.0, "epoch_seconds": 4.29, "wall_s_with_startup": 40.0,
                                          "train_loss": 7.1, "valid_recall@50": 0.3},
                      "ddp": {"samples_per_s": 400.0, "epoch_seconds": 3.2, "wall_s_with_startup": 30.0,
                              "train_loss": 7.0, "valid_recall@50": 0.31}}}


def run_script(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def path_without_nvidia_smi() -> str:
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if d and not (Path(d) / "nvidia-smi").exists())


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_nvidia_smi(folder: Path, lines: str, code: int = 0) -> str:
    """A PATH whose nvidia-smi prints `lines` and exits with `code`, in front of the real PATH."""
    folder.mkdir(exist_ok=True)
    executable(folder / "nvidia-smi", f"#!/bin/sh\necho '{lines}'\nexit {code}\n")
    return f"{folder}{os.pathsep}{path_without_nvidia_smi()}"


# --- the wrapper ------------------------------------------------------------------------------------

def test_script_parses_and_is_executable():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    assert SCRIPT.stat().st_mode & stat.S_IXUSR


def test_help_names_parts_options_and_exit_codes():
    result = run_script("--help")
    assert result.returncode == 0
    for word in ("--out", "--quick", "--run-dir", "--parts", "--part-timeout", "scoring", "prefix", "embedding",
                 "deepspeed", "1e-3", "3 no NVIDIA GPU"):
        assert word in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown argument: --bogus"),
    (["--out"], "--out needs a value"),
    (["--out", "--quick"], "--out needs a value"),
    (["--parts", "scoring,training"], "unknown part 'training'"),
    (["--part-timeout", "ten"], "'ten' is not a whole number"),
    (["--part-timeout", "0"], "'0' is not a whole number"),
    (["--out", "/nonexistent-folder/x.json"], "folder /nonexistent-folder does not exist"),
])
def test_argument_errors_exit_2_before_looking_for_a_gpu(args, message):
    result = run_script(*args, env={"PATH": path_without_nvidia_smi()})
    assert result.returncode == 2
    assert message in result.stderr


def test_without_nvidia_smi_exits_3_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.json"
    result = run_script("--out", str(out), env={"PATH": path_without_nvidia_smi()})
    assert result.returncode == 3
    assert "nvidia-smi is not on PATH" in result.stderr
    assert not out.exists()


def test_a_failing_nvidia_smi_exits_3_with_its_message(tmp_path):
    path = fake_nvidia_smi(tmp_path / "bin", "NVIDIA-SMI has failed because it could not communicate", code=9)
    result = run_script("--out", str(tmp_path / "gpu.json"), env={"PATH": path})
    assert result.returncode == 3
    assert "could not communicate" in result.stderr


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM installed: the preflight would pass")
def test_an_environment_without_the_gpu_extra_exits_4_naming_it(tmp_path):
    """This test environment has CPU torch and no vLLM: the preflight must say so, not start measuring."""
    path = fake_nvidia_smi(tmp_path / "bin", "GPU 0: NVIDIA H200 (UUID: GPU-0)")
    result = run_script("--out", str(tmp_path / "gpu.json"), env={"PATH": path, "PYTHON": sys.executable})
    assert result.returncode == 4
    assert "vllm not importable" in result.stderr
    assert "nothing was measured" in result.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_part_loop_records_timeouts_failures_and_measurements(tmp_path):
    """The wrapper on a stand-in interpreter: preflight passes, two parts write measurements, one fails, one
    outlives its limit; the real report then prints the table and writes the JSON."""
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    for name, result in (("scoring", SCORING), ("deepspeed", DEEPSPEED)):
        (fixtures / f"{name}.json").write_text(json.dumps(result))
    shim = executable(tmp_path / "python", f"""#!/bin/bash
if [[ "$2" == preflight ]]; then echo '{{"gpu": "stand-in"}}' >"$4"; exit 0; fi
if [[ "$2" == measure ]]; then
    case "$3" in
        prefix) sleep 30 ;;
        embedding) echo "RuntimeError: the encoder loaded on cpu" >&2; exit 1 ;;
        *) cp "{fixtures}/$3.json" "$7" ;;
    esac
    exit 0
fi
exec {sys.executable} "$@"
""")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "items.parquet").write_text("")  # the wrapper only checks that a prepared run is there
    out = tmp_path / "gpu.json"
    path = fake_nvidia_smi(tmp_path / "bin", "GPU 0: stand-in")
    result = run_script("--out", str(out), "--run-dir", str(run_dir), "--part-timeout", "1",
                        env={"PATH": path, "PYTHON": str(shim)})
    assert result.returncode == 1, result.stderr
    assert "timed out after 1 s" in result.stdout
    assert "exit 1: RuntimeError: the encoder loaded on cpu" in result.stdout
    report = json.loads(out.read_text())
    assert report["passed"] is False
    assert report["machine"] == {"gpu": "stand-in"}
    assert report["parts"]["scoring"] == SCORING
    assert report["parts"]["prefix"] == {"status": "timed out after 1 s", "limit_s": 1.0}
    failed = {c["part"] for c in report["checks"] if not c["passed"]}
    assert failed == {"(b) prefix", "(c) embedding"}
    logs = result.stderr.strip().splitlines()[-1].removeprefix("logs kept in ")
    assert Path(logs).is_dir()
    shutil.rmtree(logs)


# --- the assembly -----------------------------------------------------------------------------------

def test_agreement_flags_a_difference_above_the_tolerance():
    hf = np.array([1.0, 2.5, 3.9])
    assert gpu_check.agreement(hf, hf + [0.0, 5e-4, 0.0])["within_tolerance"] is True
    flagged = gpu_check.agreement(hf, hf + [0.0, 2e-3, -1e-4])
    assert flagged["within_tolerance"] is False
    assert flagged["max_abs_diff"] == pytest.approx(2e-3)
    assert flagged["mean_abs_diff"] == pytest.approx(2.1e-3 / 3)
    with pytest.raises(ValueError, match="shape"):
        gpu_check.agreement([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="no scores"):
        gpu_check.agreement([], [])


def test_a_2e_3_float32_difference_fails_the_report():
    scoring = {**SCORING, "fp32": gpu_check.agreement([2.0, 3.0], [2.002, 3.0])}
    rows = gpu_check.table_rows({"scoring": scoring})
    assert ("(a) scoring", "vLLM vs transformers, float32, 2 pairs: max |diff|", "2.00e-03", "FAIL") in rows
    report = gpu_check.build_report({"scoring": scoring}, {})
    assert report["passed"] is False
    assert [c["measure"] for c in report["checks"] if not c["passed"]] == [
        "vLLM vs transformers, float32, 2 pairs: max |diff|"]


def test_all_parts_measured_and_within_tolerance_pass_with_ratios_in_the_table():
    parts = {"scoring": SCORING, "prefix": PREFIX, "embedding": EMBEDDING, "deepspeed": DEEPSPEED}
    report = gpu_check.build_report(parts, {"gpu": "H200"})
    assert report["passed"] is True
    assert json.loads(json.dumps(report)) == report
    assert gpu_check.build_report({"embedding": EMBEDDING}, {})["passed"] is True  # a part without checks
    values = {(part, measure): value for part, measure, value, _ in gpu_check.table_rows(parts)}
    assert values[("(a) scoring", "vLLM pairs/s (bfloat16)")] == "2,000 (5.00x)"
    assert values[("(a) scoring", "vLLM vs transformers, bfloat16: max |diff|")] == "2.10e-02"  # reported only
    assert values[("(b) prefix", "caching on / off")] == "2.50x"
    assert values[("(b) prefix", "token cut the shared prefix allows")] == "3.07x"  # 204,800 / 66,784
    assert values[("(c) embedding", "MiniLM texts/s, batch 256 (2755 texts)")] == "8,000"
    assert values[("(d) deepspeed", "ZeRO-2 / DDP samples/s")] == "0.75x"
    assert values[("(d) deepspeed", "DeepSpeed ZeRO-2: epoch / wall with start-up")] == "4.29 s / 40 s"


def test_an_adapter_that_does_not_move_scores_fails():
    """Equality of two engines means nothing about the LoRA path when the LoRA changes no score."""
    rows = gpu_check.table_rows({"scoring": {**SCORING, "adapter_effect_max_abs": 0.0}})
    assert ("(a) scoring", "LoRA moves scores by up to (must exceed the tolerance)", "0", "FAIL") in rows


def test_a_failed_float32_engine_and_a_nan_loss_are_failed_checks():
    scoring = {**SCORING, "fp32": {"error": "ValueError: float32 is not supported"}}
    deepspeed = {**DEEPSPEED, "runs": {"deepspeed_zero2": {**DEEPSPEED["runs"]["deepspeed_zero2"],
                                                           "train_loss": float("nan")}}}
    rows = gpu_check.table_rows({"scoring": scoring, "deepspeed": deepspeed})
    assert ("(a) scoring", "vLLM vs transformers, float32: max |diff|", "ValueError: float32 is not supported",
            "FAIL") in rows
    assert ("(d) deepspeed", "DeepSpeed ZeRO-2: train loss", "n/a", "FAIL") in rows
    assert not any(measure.startswith("ZeRO-2 / DDP") for _, measure, _, _ in rows)


def test_part_outcome_says_why_a_part_has_no_measurements():
    assert gpu_check.part_outcome(None, 124, 150.0) == {"status": "timed out after 150 s", "limit_s": 150.0}
    assert gpu_check.part_outcome(None, None, 150.0) == {"status": "not run"}
    assert gpu_check.part_outcome(None, 1, 150.0, "Traceback ...\n  File x\nCUDA error: out of memory\n\n") == {
        "status": "exit 1: CUDA error: out of memory", "exit_code": 1}
    assert gpu_check.part_outcome(EMBEDDING, 0, 90.0) == EMBEDDING
    assert gpu_check.part_outcome(EMBEDDING, 139, 90.0) == {**EMBEDDING, "exit_code": 139}


def test_format_table_aligns_columns():
    text = gpu_check.format_table([("(a) scoring", "vLLM pairs/s", "2,000", ""),
                                   ("(b) prefix", "on / off", "2.50x", "ok")])
    lines = text.splitlines()
    assert lines[0].split() == ["part", "measure", "value", "check"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].index("vLLM") == lines[3].index("on /") == lines[0].index("measure")
    assert lines[3].endswith("ok")


def test_report_command_reads_the_parts_folder(tmp_path, capsys):
    (tmp_path / "embedding.json").write_text(json.dumps(EMBEDDING))
    (tmp_path / "embedding.rc").write_text("0\n")
    (tmp_path / "deepspeed.rc").write_text("124\n")
    (tmp_path / "machine.json").write_text(json.dumps({"gpu": "H200"}))
    out = tmp_path / "report.json"
    code = gpu_check.main(["report", "--parts-dir", str(tmp_path), "--parts", "embedding,deepspeed",
                           "--limits", "embedding=90,deepspeed=150", "--out", str(out)])
    assert code == 1
    printed = capsys.readouterr().out
    assert "timed out after 150 s" in printed and "CHECKS FAILED" in printed
    report = json.loads(out.read_text())
    assert report["parts"]["embedding"] == EMBEDDING
    assert report["machine"] == {"gpu": "H200"}
