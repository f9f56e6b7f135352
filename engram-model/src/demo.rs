//! The demo: one Engram layer of the reference demo's configuration with seeded random weights,
//! run over a sentence on the CPU backend, and its gates rendered as a heatmap.

use std::fmt::Write as _;
use std::time::Instant;

use engram_core::synthetic::{self, SplitMix64, TABLE_CHUNK_ROWS};
use engram_core::{
    Backend, DeviceEngramLayer, Element, EngramConfig, EngramLayer, EngramOps, NgramHasher,
};
use rayon::prelude::*;

use crate::error::Result;

/// Builds layer `layer_id` of `config` with seeded random weights, filling the tables in
/// parallel; `on_rows(n)` is called as each chunk of `n` rows is filled.
pub fn build_layer<T: Element>(
    config: &EngramConfig,
    hasher: &NgramHasher,
    layer_id: u32,
    seed: u64,
    on_rows: &(dyn Fn(u64) + Sync),
) -> Result<EngramLayer<T>> {
    let rows = hasher.layer(layer_id)?.total_rows() as usize;
    let d_head = config.d_head();
    let mut table = vec![T::default(); rows * d_head];
    table
        .par_chunks_mut(TABLE_CHUNK_ROWS * d_head)
        .enumerate()
        .for_each(|(i, chunk)| {
            synthetic::fill_table_chunk(chunk, seed, i);
            on_rows((chunk.len() / d_head) as u64);
        });
    Ok(synthetic::engram_layer_with_table(
        config, hasher, layer_id, seed, table,
    )?)
}

/// Hidden states for a token sequence: each raw id has a fixed random unit-variance row (a
/// stand-in for the backbone's embedding), repeated over the `M` branches as the reference demo's
/// mock hyper-connection does. `[T, M, d]`.
pub fn token_hidden<T: Element>(raw_ids: &[u32], m: usize, d: usize, seed: u64) -> Vec<T> {
    let mut out = Vec::with_capacity(raw_ids.len() * m * d);
    for &id in raw_ids {
        let mut g = SplitMix64::stream(seed ^ 0xE3B0_C442, u64::from(id));
        let row: Vec<T> = (0..d)
            .map(|_| T::from_f64(1.732_050_8 * g.next_signed_unit()))
            .collect();
        for _ in 0..m {
            out.extend_from_slice(&row);
        }
    }
    out
}

/// The result of running the layer over one sequence.
#[derive(Debug, Clone)]
pub struct DemoRun {
    /// Per token: its raw id, canonical id and decoded text.
    pub tokens: Vec<(u32, u32, String)>,
    /// `[T, M]`: each branch's gate `alpha` per token.
    pub gates: Vec<f64>,
    /// Branches M.
    pub branches: usize,
    /// Median seconds of one forward over the whole sequence.
    pub median_s: f64,
    /// Forwards timed.
    pub runs: usize,
}

impl DemoRun {
    /// Tokens per second of the median forward.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens.len() as f64 / self.median_s
    }
}

/// Runs the layer over one sequence `runs` times on `backend`, keeping the gates of the last run.
pub fn run_layer<B: EngramOps, T: Element>(
    backend: &B,
    layer: &DeviceEngramLayer<B, T>,
    compressed: &[u32],
    hidden: &[T],
    runs: usize,
) -> Result<(Vec<f64>, f64)> {
    let m = layer.config.hc_mult;
    let ids = backend.upload(compressed)?;
    let cu = backend.upload(&[0, compressed.len() as u32])?;
    let hidden = backend.upload(hidden)?;
    let mut out = backend.zeros::<T>(backend.len(&hidden))?;
    let mut gates = backend.zeros::<T>(compressed.len() * m)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        backend.engram_prefill(layer, &ids, &cu, &hidden, &mut out, Some(&mut gates), None)?;
        backend.synchronize()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let gates = backend.to_vec(&gates)?.iter().map(|g| g.to_f64()).collect();
    Ok((gates, times[times.len() / 2]))
}

/// A colour for a gate value in `[0, 1]`: a five-stop viridis ramp, as `(r, g, b)`.
pub fn gate_colour(alpha: f64) -> (u8, u8, u8) {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let x = if alpha.is_nan() {
        0.0
    } else {
        alpha.clamp(0.0, 1.0) * 4.0
    };
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn text_on(rgb: (u8, u8, u8)) -> (u8, u8, u8) {
    let luma = 0.299 * f64::from(rgb.0) + 0.587 * f64::from(rgb.1) + 0.114 * f64::from(rgb.2);
    if luma > 140.0 {
        (0, 0, 0)
    } else {
        (255, 255, 255)
    }
}

/// The gates as a terminal table: one row per token, one cell per branch, coloured (24-bit ANSI)
/// when `colour` is set.
pub fn render_terminal(run: &DemoRun, colour: bool) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:>4}  {:<18}", "pos", "token");
    for b in 0..run.branches {
        let _ = write!(s, " {:^7}", format!("m={b}"));
    }
    s.push('\n');
    for (t, (_, _, text)) in run.tokens.iter().enumerate() {
        let shown: String = format!("{text:?}").chars().take(18).collect();
        let _ = write!(s, "{t:>4}  {shown:<18}");
        for b in 0..run.branches {
            let a = run.gates[t * run.branches + b];
            if colour {
                let bg = gate_colour(a);
                let fg = text_on(bg);
                let _ = write!(
                    s,
                    " \x1b[48;2;{};{};{}m\x1b[38;2;{};{};{}m {a:.3} \x1b[0m",
                    bg.0, bg.1, bg.2, fg.0, fg.1, fg.2
                );
            } else {
                let _ = write!(s, "  {a:.3} ");
            }
        }
        s.push('\n');
    }
    s
}

fn html_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The gates as a self-contained HTML page (same table, same colours).
pub fn render_html(run: &DemoRun, title: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{padding:4px 10px;text-align:center;font-family:monospace}}td.tok{{text-align:left}}\
         </style></head><body>\n<h1>{}</h1>\n<p>Gate &alpha; of each residual branch per token \
         (0: memory ignored, 1: memory fully admitted). {} tokens, {:.1} tokens/s.</p>\n<table>\n<tr><th>pos</th><th>token</th>",
        html_escape(title),
        html_escape(title),
        run.tokens.len(),
        run.tokens_per_s()
    );
    for b in 0..run.branches {
        let _ = write!(s, "<th>m={b}</th>");
    }
    s.push_str("</tr>\n");
    for (t, (raw, canon, text)) in run.tokens.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><td>{t}</td><td class=\"tok\" title=\"raw {raw}, canonical {canon}\">{}</td>",
            html_escape(&format!("{text:?}"))
        );
        for b in 0..run.branches {
            let a = run.gates[t * run.branches + b];
            let bg = gate_colour(a);
            let fg = text_on(bg);
            let _ = write!(
                s,
                "<td style=\"background:rgb({},{},{});color:rgb({},{},{})\">{a:.3}</td>",
                bg.0, bg.1, bg.2, fg.0, fg.1, fg.2
            );
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n</body></html>\n");
    s
}

/// Moves a built layer onto a backend.
pub fn to_device<B: Backend, T: Element>(
    backend: &B,
    layer: EngramLayer<T>,
) -> Result<DeviceEngramLayer<B, T>> {
    Ok(DeviceEngramLayer::upload_owned(backend, layer)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_ramp_ends_and_monotone_luma() {
        assert_eq!(gate_colour(0.0), (68, 1, 84));
        assert_eq!(gate_colour(1.0), (253, 231, 37));
        assert_eq!(gate_colour(f64::NAN), gate_colour(0.0));
        let luma = |c: (u8, u8, u8)| {
            0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2)
        };
        let mut last = -1.0;
        for i in 0..=20 {
            let l = luma(gate_colour(f64::from(i) / 20.0));
            assert!(l >= last, "luma must rise with alpha");
            last = l;
        }
    }

    #[test]
    fn html_escapes_token_text() {
        let run = DemoRun {
            tokens: vec![(1, 1, "<b>&".to_owned())],
            gates: vec![0.5],
            branches: 1,
            median_s: 1.0,
            runs: 1,
        };
        let page = render_html(&run, "t");
        assert!(page.contains("&lt;b&gt;&amp;"));
        assert!(!page.contains("<b>&"));
    }
}
