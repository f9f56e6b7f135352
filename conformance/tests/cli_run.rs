//! `engram-conformance run`, as a user runs it.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

mod support;

use std::process::Output;

fn run(args: &[&str]) -> Output {
    support::command(env!("CARGO_BIN_EXE_engram-conformance"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn eval_runs_every_case_and_summarises() {
    let o = run(&["run", "--backend", "cpu"]);
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8(o.stdout).unwrap();
    let summary = text.lines().last().unwrap();
    let total: usize = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(total >= 300, "{summary}");
    assert!(summary.contains(" 0 FAIL"), "{summary}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("OK ")).count() + 1,
        total,
        "{summary}"
    );
}

#[test]
fn filter_and_csv_select_and_format() {
    let o = run(&["run", "--filter", "^moe_route/in_bf16/", "--format", "csv"]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "case,status,ms,gb_per_s,gflop_per_s,detail"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 9, "{text}");
    assert!(rows
        .iter()
        .all(|r| r.starts_with("moe_route/in_bf16/") && r.contains(",OK,")));
}

#[test]
fn perf_mode_reports_throughput() {
    let o = run(&[
        "run",
        "--mode",
        "perf",
        "--filter",
        "perf/(hash|gather/in_f32)",
    ]);
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("GB/s") && l.contains("GFLOP/s"))
            .count(),
        2,
        "{text}"
    );
}

#[test]
fn a_bad_filter_is_a_one_line_error() {
    let o = run(&["run", "--filter", "("]);
    assert!(!o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: --filter"), "{err}");
}
