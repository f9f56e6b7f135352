//! [`testgen!`](crate::testgen): the whole suite as `#[test]`s for any backend, in two lines.

use crate::cases::all_cases;
use crate::harness::{run_case, CaseResult, Status};
use engram_core::{EngramOps, MoeOps};

/// What a backend constructor may return: the backend, or why there is none here.
pub trait BackendInit<B> {
    /// The backend, or the reason it cannot run on this machine.
    fn into_backend(self) -> Result<B, String>;
}

impl<B> BackendInit<B> for Option<B> {
    fn into_backend(self) -> Result<B, String> {
        self.ok_or_else(|| "the backend's constructor returned None (no usable device)".to_owned())
    }
}

impl<B, E: std::fmt::Display> BackendInit<B> for Result<B, E> {
    fn into_backend(self) -> Result<B, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Writes straight to the process's standard error, past the test harness's capture, so a
/// skipped or unsupported case is visible in every test run.
fn announce(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Runs case `name` (`family/in_dtype/shape`) on the backend `init` gives, and panics with the
/// failed checks if it fails. Used by [`testgen!`](crate::testgen); callable directly.
pub fn run_named<B: EngramOps + MoeOps>(init: impl BackendInit<B>, name: &str) {
    let Some(case) = all_cases().into_iter().find(|c| c.name == name) else {
        panic!("no case named {name}: the testgen! table and the case grid disagree");
    };
    let result: CaseResult = match init.into_backend() {
        Ok(backend) => run_case(&backend, &case),
        Err(reason) => CaseResult::skipped(name, &reason),
    };
    match result.status {
        Status::Ok => {}
        Status::Skipped | Status::NotSupported => {
            announce(&format!("{} {name}: {}", result.status, result.detail))
        }
        Status::Fail => panic!("FAIL {name}: {}", result.detail),
    }
}

/// Expands to one `#[test]` per case of the suite, for backend type `$backend` built by `$init`
/// (an expression giving `Option<$backend>` or `Result<$backend, E>`; `None`/`Err` marks every
/// case SKIPPED with the reason printed, never passed silently).
///
/// ```ignore
/// engram_conformance::testgen!(engram_cpu::CpuBackend, Some(engram_cpu::CpuBackend::new()));
/// ```
///
/// Tests are named `<family>::in_<dtype>::<shape>`, the case names of
/// [`crate::cases::all_cases`].
#[macro_export]
macro_rules! testgen {
    ($backend:ty, $init:expr) => {
        $crate::__case_table! { $crate::__testgen_family; $backend; $init }
    };
}

/// The case table: family, dtypes, shapes. Must list exactly the cases of
/// [`crate::cases::all_cases`] (a test of this crate checks it).
#[doc(hidden)]
#[macro_export]
macro_rules! __case_table {
    ($cb:path; $($args:tt)*) => {
        $cb! { $($args)*; compress_ids; [in_u32]; [random, largest_id, empty] }
        $cb! { $($args)*; hash; [in_u32]; [one_token, shorter_than_order, len1_in_batch, odd_widths, m1, m4, n2, n4, n5, empty_batch, empty_sequences, largest_ids, no_conv, kernel1, tensor_tiles, tensor_tiles_no_conv, tensor_tiles_k3, deep_k, deep_k_split, tiles_hidden20, tiles_kernel6, wide_hidden, tiles_hidden128, tiles_hidden256_no_conv, k_tiles3, k_tiles4] }
        $cb! { $($args)*; gather; [in_f32, in_bf16, in_f16, in_f64]; [one_token, len1_in_batch, odd_widths, n5, empty_batch, rows_at_ends, m4, largest_ids, wide_rows] }
        $cb! { $($args)*; rms_norm; [in_f32, in_bf16, in_f16, in_f64]; [single_element, groups4, odd, empty, wide, many_rows] }
        $cb! { $($args)*; linear; [in_f32, in_bf16, in_f16, in_f64]; [single, bias, odd_no_bias, empty, projection, one_input] }
        $cb! { $($args)*; gate; [in_f32, in_bf16, in_f16, in_f64]; [one_token, odd_widths, m1, m4, empty_batch, n2] }
        $cb! { $($args)*; short_conv; [in_f32, in_bf16, in_f16, in_f64]; [one_token, len1_in_batch, odd_widths, kernel1, empty_sequences, n5] }
        $cb! { $($args)*; short_conv_decode; [in_f32, in_bf16, in_f16, in_f64]; [one_seq, many, kernel1, wide] }
        $cb! { $($args)*; engram_prefill; [in_f32, in_bf16, in_f16, in_f64]; [one_token, shorter_than_order, len1_in_batch, odd_widths, m1, m4, n2, n4, n5, empty_batch, empty_sequences, largest_ids, no_conv, kernel1, tensor_tiles, tensor_tiles_no_conv, tensor_tiles_k3, deep_k, deep_k_split, tiles_hidden20, tiles_kernel6, wide_hidden, tiles_hidden128, tiles_hidden256_no_conv, k_tiles3, k_tiles4] }
        $cb! { $($args)*; engram_decode; [in_f32, in_bf16, in_f16, in_f64]; [one_token, shorter_than_order, len1_in_batch, odd_widths, m1, m4, n2, n5, no_conv, kernel1, tensor_tiles, tensor_tiles_no_conv, tensor_tiles_k3, deep_k, deep_k_split, tiles_hidden20, tiles_kernel6, wide_hidden, tiles_hidden128, k_tiles3, k_tiles4] }
        $cb! { $($args)*; moe_route; [in_f32, in_bf16, in_f16, in_f64]; [sigmoid_grouped_bias, softmax_flat, sigmoid_flat_nobias, softmax_grouped_bias, topk_all, one_token, empty_batch, ties, softmax_all] }
        $cb! { $($args)*; expert_ffn; [in_f32, in_bf16, in_f16, in_f64]; [one_row, odd, empty, wide] }
        $cb! { $($args)*; moe_layer; [in_f32, in_f64]; [sigmoid_grouped_bias, softmax_flat, topk_all, one_token, empty_batch, shared2] }
        $cb! { $($args)*; moe_layer_all_experts; [in_f32, in_bf16, in_f16, in_f64]; [topk_all, softmax_all] }
        $cb! { $($args)*; bad_input; [in_f32]; [hash_id_at_vocab, hash_id_max, compress_id_beyond_raw, seqlens_decreasing, seqlens_not_ending_at_total, seqlens_not_starting_at_zero, seqlens_empty, prefill_hidden_wrong_len, prefill_output_wrong_len, gather_row_beyond_table, decode_state_wrong_sequences, decode_id_beyond_vocab, prefill_id_beyond_vocab, prefill_seqlens_decreasing, decode_tiles_id_beyond_vocab, decode_tiles_history_beyond_vocab, hash_decode_history_beyond_vocab, linear_bias_wrong_len, moe_input_wrong_len, route_bias_wrong_len, unsupported_dtype] }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __testgen_family {
    ($backend:ty; $init:expr; $family:ident; [$($dtype:ident),*]; $shapes:tt) => {
        #[allow(non_snake_case)]
        mod $family {
            #[allow(unused_imports)]
            use super::*;
            $( $crate::__testgen_dtype! { $backend; $init; $family; $dtype; $shapes } )*
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __testgen_dtype {
    ($backend:ty; $init:expr; $family:ident; $dtype:ident; [$($shape:ident),*]) => {
        mod $dtype {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $shape() {
                    $crate::testgen::run_named::<$backend>(
                        $init,
                        concat!(stringify!($family), "/", stringify!($dtype), "/", stringify!($shape)),
                    );
                }
            )*
        }
    };
}

/// Case names as the case table lists them (for the check that table and grid agree).
#[doc(hidden)]
#[macro_export]
macro_rules! __table_names {
    ($out:ident; $family:ident; [$($dtype:ident),*]; $shapes:tt) => {
        $( $crate::__table_names_dtype! { $out; $family; $dtype; $shapes } )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __table_names_dtype {
    ($out:ident; $family:ident; $dtype:ident; [$($shape:ident),*]) => {
        $( $out.push(concat!(stringify!($family), "/", stringify!($dtype), "/", stringify!($shape))); )*
    };
}

/// Every case name the `testgen!` table lists, in order.
#[allow(clippy::vec_init_then_push)] // the pushes come from the case table's expansion
pub fn table_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    crate::__case_table! { crate::__table_names; names }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_testgen_table_lists_exactly_the_case_grid() {
        let grid: Vec<String> = all_cases().into_iter().map(|c| c.name).collect();
        let table: Vec<String> = table_names().into_iter().map(str::to_owned).collect();
        assert_eq!(table, grid);
        assert!(grid.len() >= 300, "{} cases", grid.len());
    }
}
