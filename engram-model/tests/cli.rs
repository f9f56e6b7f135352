//! The `engram` binary, run as a user runs it.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use std::path::PathBuf;
#[path = "../../conformance/tests/support/mod.rs"]
mod support;

use std::process::Output;

fn engram(args: &[&str]) -> Output {
    support::command(env!("CARGO_BIN_EXE_engram"))
        .args(args)
        .output()
        .expect("the engram binary runs")
}

fn golden(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../conformance/golden")
        .join(name)
        .display()
        .to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn assert_clean_failure(o: &Output, needle: &str) {
    assert!(!o.status.success());
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line error, got {err:?}"
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(!err.contains("panicked"));
}

#[test]
fn vocab_reports_the_v3_reduction_and_writes_the_reference_lookup() {
    let tokenizer = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/tokenizer-deepseek-v3/tokenizer.json");
    let dir = std::env::temp_dir().join(format!("engram-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_file = dir.join("lookup.safetensors");
    let o = engram(&[
        "vocab",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(text.contains("raw ids:    128815"), "{text}");
    assert!(text.contains("canonical:  98627"), "{text}");
    assert!(text.contains("reduction:  23.44 %"), "{text}");
    let written = engram_model::io::read_vocab(&out_file).unwrap();
    let reference =
        engram_model::io::read_vocab(golden("vocab_deepseek_v3_lookup.safetensors")).unwrap();
    assert_eq!(written.lookup(), reference.lookup());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hash_prints_the_reference_rows_for_the_public_config() {
    // The first public text, hashed alone, is row 0 of the golden batch without its padding.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("engram_public.json")).unwrap())
            .unwrap();
    let text = json["texts"][0].as_str().unwrap();
    let o = engram(&[
        "hash",
        "--text",
        text,
        "--config",
        &golden("engram_public.json"),
        "--layer",
        "15",
    ]);
    assert!(o.status.success(), "{o:?}");
    let file = std::fs::read(golden("engram_public.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&file).unwrap();
    let rows: Vec<i64> = tensors
        .tensor("hash_ids.layer15")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let printed: Vec<Vec<i64>> = stdout(&o)
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .map(|l| {
            l.split_whitespace()
                .rev()
                .take(8)
                .map(|v| v.parse().unwrap())
                .collect::<Vec<i64>>()
                .into_iter()
                .rev()
                .collect()
        })
        .collect();
    assert_eq!(printed.len(), 13, "{}", stdout(&o));
    for (t, got) in printed.iter().enumerate() {
        assert_eq!(got.as_slice(), &rows[t * 8..(t + 1) * 8], "position {t}");
    }
}

#[test]
fn bad_input_ends_with_one_line_and_a_nonzero_exit() {
    let missing = std::env::temp_dir().join("engram-no-such-file.json");
    let missing = missing.to_str().unwrap();
    assert_clean_failure(&engram(&["hash", "--text", "x", "--layer", "3"]), "layer 3");
    assert_clean_failure(
        &engram(&["hash", "--text", "x", "--config", missing]),
        "engram-no-such-file",
    );
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    assert_clean_failure(
        &engram(&["hash", "--text", "x", "--config", manifest]),
        "not a valid Engram config",
    );
    assert_clean_failure(
        &engram(&["vocab", "--tokenizer", manifest]),
        "not a usable tokenizer.json",
    );
    assert_clean_failure(
        &engram(&["vocab", "--tokenizer", missing]),
        "engram-no-such-file",
    );
    let dir = std::env::temp_dir().join(format!("engram-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let public: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("engram_public.json")).unwrap())
            .unwrap();
    let incomplete = dir.join("incomplete.json");
    std::fs::write(&incomplete, r#"{"engram": {"max_ngram_size": 3}}"#).unwrap();
    assert_clean_failure(
        &engram(&[
            "hash",
            "--text",
            "x",
            "--config",
            incomplete.to_str().unwrap(),
        ]),
        "is missing",
    );
    let bad = dir.join("bad.json");
    let mut cfg = public.clone();
    cfg["engram"]["engram_vocab_size"] = serde_json::json!([5]);
    std::fs::write(&bad, cfg.to_string()).unwrap();
    assert_clean_failure(
        &engram(&["hash", "--text", "x", "--config", bad.to_str().unwrap()]),
        "engram_vocab_size",
    );
    let pad = dir.join("pad.json");
    let mut cfg = public;
    cfg["engram"]["pad_id"] = serde_json::json!(999_999);
    std::fs::write(&pad, cfg.to_string()).unwrap();
    assert_clean_failure(
        &engram(&["hash", "--text", "x", "--config", pad.to_str().unwrap()]),
        "pad_id 999999",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The gate values of a demo's heatmap rows.
fn gate_rows(text: &str) -> Vec<Vec<f64>> {
    text.lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .map(|l| {
            l.split_whitespace()
                .rev()
                .take(4)
                .map(|v| v.parse().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn demo_on_wgpu_shows_the_gates_of_the_cpu_backend() {
    let args = |backend: &'static str| {
        vec![
            "demo".to_owned(),
            "--config".to_owned(),
            golden("engram_public.json"),
            "--runs".to_owned(),
            "1".to_owned(),
            "--color".to_owned(),
            "never".to_owned(),
            "--backend".to_owned(),
            backend.to_owned(),
        ]
    };
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let cpu = engram(&refs(&args("cpu")));
    assert!(cpu.status.success(), "{cpu:?}");
    assert!(
        stdout(&cpu).contains("on the cpu backend"),
        "{}",
        stdout(&cpu)
    );
    let wgpu = engram(&refs(&args("wgpu")));
    if !wgpu.status.success() && std::env::var_os("ENGRAM_REQUIRE_WGPU").is_none() {
        // No adapter here: a clean one-line error, and the case is skipped.
        assert_clean_failure(&wgpu, "no usable device");
        return;
    }
    assert!(wgpu.status.success(), "{wgpu:?}");
    let text = stdout(&wgpu);
    assert!(text.contains("on the wgpu backend ("), "{text}");
    let (a, b) = (gate_rows(&stdout(&cpu)), gate_rows(&text));
    assert_eq!(a.len(), 13, "{text}");
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(&b) {
        for (x, y) in ra.iter().zip(rb) {
            assert!((x - y).abs() <= 1e-3, "cpu {ra:?} vs wgpu {rb:?}");
        }
    }
}

#[test]
fn demo_runs_a_layer_and_renders_every_gate() {
    let dir = std::env::temp_dir().join(format!("engram-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("gates.html");
    // The public golden config keeps the tables small; the default is the 2.6 GB reference demo.
    let o = engram(&[
        "demo",
        "--config",
        &golden("engram_public.json"),
        "--text",
        "Only Alexander the Great could tame the horse Bucephalus.",
        "--html",
        html.to_str().unwrap(),
        "--runs",
        "2",
        "--color",
        "never",
    ]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    let gate_rows = gate_rows(&text);
    assert_eq!(gate_rows.len(), 13, "{text}");
    for row in &gate_rows {
        assert!(row.iter().all(|&a| a > 0.0 && a < 1.0), "{text}");
    }
    assert!(text.contains("tokens/s"), "{text}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<tr>").count(), 14, "header + 13 tokens");
    // A different seed gives different weights, hence different gates.
    let other = engram(&[
        "demo",
        "--config",
        &golden("engram_public.json"),
        "--seed",
        "1",
        "--runs",
        "1",
        "--color",
        "never",
    ]);
    assert!(other.status.success());
    assert_ne!(stdout(&other).lines().nth(5), text.lines().nth(5));
    let unknown = engram(&[
        "demo",
        "--config",
        &golden("engram_public.json"),
        "--layer",
        "2",
    ]);
    assert_clean_failure(&unknown, "layer 2");
    std::fs::remove_dir_all(&dir).unwrap();
}
