//! The golden runner on every golden file, on corrupt and mismatched files, and as a CLI.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

mod support;

use std::path::{Path, PathBuf};

use engram_conformance::golden::golden_dir;
use engram_conformance::runner::{run_golden, RunnerError};
use engram_cpu::CpuBackend;

fn golden_files() -> Vec<PathBuf> {
    let files = engram_conformance::golden::golden_files().unwrap();
    assert!(files.len() >= 6, "the variant files are part of the suite");
    files
}

#[test]
fn every_golden_file_passes_on_the_cpu_backend() {
    for file in golden_files() {
        let report = run_golden(&CpuBackend::new(), &file).unwrap();
        assert!(report.passed(), "{report}");
        // Both precisions ran for every output.
        assert!(
            report.checks.iter().any(|c| c.name.contains("f64")),
            "{report}"
        );
        assert!(
            report.checks.iter().any(|c| c.name.contains("f32")),
            "{report}"
        );
    }
}

/// A scratch folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("engram-golden-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn copy(&self, from: &Path, stem: &str) -> PathBuf {
        let st = self.0.join(format!("{stem}.safetensors"));
        std::fs::copy(from, &st).unwrap();
        std::fs::copy(from.with_extension("json"), st.with_extension("json")).unwrap();
        st
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Rewrites one tensor of a safetensors file through `edit`.
fn edit_tensor(path: &Path, name: &str, edit: impl Fn(&mut [u8])) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let t = owned.iter_mut().find(|t| t.0 == name).unwrap();
    edit(&mut t.3);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn a_wrong_output_fails_its_check() {
    let scratch = Scratch::new("wrong");
    let path = scratch.copy(&golden_dir().join("engram_public.safetensors"), "perturbed");
    // Flip the sign of one element of the expected output.
    edit_tensor(&path, "output_f64", |b| b[7] ^= 0x80);
    let report = run_golden(&CpuBackend::new(), &path).unwrap();
    assert!(!report.passed(), "{report}");
    let moe = scratch.copy(
        &golden_dir().join("moe_public.safetensors"),
        "moe_perturbed",
    );
    edit_tensor(&moe, "softmax_flat.route_indices", |b| b[0] ^= 1);
    let report = run_golden(&CpuBackend::new(), &moe).unwrap();
    assert!(!report.passed(), "{report}");
    assert_eq!(
        report.checks.iter().filter(|c| !c.passed()).count(),
        1,
        "{report}"
    );
}

#[test]
fn corrupt_and_mismatched_files_are_clear_errors() {
    let scratch = Scratch::new("corrupt");
    let cpu = CpuBackend::new();
    let public = golden_dir().join("engram_public.safetensors");

    let truncated = scratch.copy(&public, "truncated");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        run_golden(&cpu, &truncated),
        Err(RunnerError::File(_))
    ));

    let no_json = scratch.0.join("lonely.safetensors");
    std::fs::copy(&public, &no_json).unwrap();
    let err = run_golden(&cpu, &no_json).unwrap_err();
    assert!(matches!(err, RunnerError::Json { .. }), "{err}");

    let neither = scratch.copy(&public, "neither");
    std::fs::write(neither.with_extension("json"), r#"{"something": 1}"#).unwrap();
    let err = run_golden(&cpu, &neither).unwrap_err();
    assert!(err.to_string().contains("neither"), "{err}");

    // A config that contradicts the tensors: the hidden size no longer matches the weights.
    let mismatched = scratch.copy(&public, "mismatched");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mismatched.with_extension("json")).unwrap())
            .unwrap();
    json["backbone"]["hidden_size"] = serde_json::json!(32);
    std::fs::write(mismatched.with_extension("json"), json.to_string()).unwrap();
    let err = run_golden(&cpu, &mismatched).unwrap_err();
    assert!(matches!(err, RunnerError::Layer { .. }), "{err}");
    assert!(err.to_string().contains("shape"), "{err}");

    // An MoE file whose JSON names a case it does not hold.
    let moe = scratch.copy(
        &golden_dir().join("moe_public.safetensors"),
        "moe_mismatched",
    );
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(moe.with_extension("json")).unwrap())
            .unwrap();
    json["cases"][0]["name"] = serde_json::json!("absent_case");
    std::fs::write(moe.with_extension("json"), json.to_string()).unwrap();
    let err = run_golden(&cpu, &moe).unwrap_err();
    assert!(err.to_string().contains("absent_case"), "{err}");
}

#[test]
fn cli_exit_status_follows_the_checks() {
    let bin = env!("CARGO_BIN_EXE_engram-conformance");
    let ok = support::command(bin)
        .args(["golden", "--backend", "cpu"])
        .args(golden_files())
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    let text = String::from_utf8(ok.stdout).unwrap();
    assert!(text.contains("PASS"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");

    let bad = support::command(bin)
        .args(["golden", "/nonexistent/x.safetensors"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8(bad.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
}
