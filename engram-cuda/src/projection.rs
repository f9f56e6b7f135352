//! Which kernel computes the stacked projection of the fast path, and what each one needs.
//!
//! Eight kernels do the same job (`kernels/fused.cu` and `kernels/hopper.cu`): `mma.sync` with
//! 128 x 128 or 128 x 256 output tiles, loadable on sm_90 and later, and, sm_90a only, `wgmma`
//! with the same two widths and a warp-specialised persistent `wgmma` kernel with 256 x 128
//! tiles, those three again with their weight tiles brought by the copy engine (TMA). The TMA
//! kernels have an `_ab` variant for a prefill whose rows were gathered into a matrix first
//! ([`ROWS_OVERRIDE`]), which brings that matrix's tiles by tensor copies too (same launch
//! and shared memory, a second tensor map).
//! The backend picks one when it is made: `ENGRAM_CUDA_PROJ` names one (`mma`, `mma-wide`,
//! `wgmma`, `wgmma-wide`, `wgmma-tma`, `wgmma-wide-tma`, `wgmma-ws`, `wgmma-ws-tma`), otherwise
//! the fastest measured on the device's architecture (`benches/NOTES.md`: `wgmma` on an H100,
//! `mma` elsewhere).

use engram_core::{Error, Result};

use crate::BACKEND_NAME;

/// Tokens per projection block (every kernel).
pub(crate) const TOKENS_PER_BLOCK: usize = 128;
/// Elements of k per pipeline stage (one 128-byte row of a 16-bit tile).
pub(crate) const K_TILE: usize = 64;
/// Threads per projection block (every kernel).
pub(crate) const THREADS: u32 = 256;
/// Warps of a projection block that compute outputs (every kernel): a split projection counts
/// the shares of k of each one's region of a tile (`PROJ_WARPS` in `kernels/common.cuh`).
pub(crate) const PROJ_WARPS: usize = 8;

/// One of the projection kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Projection {
    /// `proj_mma_*`: mma.sync, 128 x 128 tiles, 3 stages.
    Mma,
    /// `proj_mma_wide_*`: mma.sync, 128 x 256 tiles, 3 stages.
    MmaWide,
    /// `proj_wgmma_*`: wgmma (sm_90a), 128 x 128 tiles, 3 stages, two blocks per
    /// multiprocessor.
    Wgmma,
    /// `proj_wgmma_wide_*`: wgmma (sm_90a), 128 x 256 tiles, 4 stages.
    WgmmaWide,
    /// `proj_wgmma_tma_*`: `proj_wgmma_*` with each weight tile one bulk tensor copy (TMA)
    /// through a tensor map of the weights, passed as the kernel's last parameter.
    WgmmaTma,
    /// `proj_wgmma_wide_tma_*`: `proj_wgmma_wide_*` with its weight tiles brought as
    /// `WgmmaTma`'s are.
    WgmmaWideTma,
    /// `proj_wgmma_ws_*`: wgmma (sm_90a), 256 x 128 tiles, warp-specialised (a producer
    /// warpgroup and two consumers) and persistent (one block per multiprocessor).
    WgmmaWs,
    /// `proj_wgmma_ws_tma_*`: `proj_wgmma_ws_*` with its weight tiles brought as `WgmmaTma`'s
    /// are, by the producer's thread 0.
    WgmmaWsTma,
}

/// The environment variable that overrides the choice.
pub(crate) const OVERRIDE: &str = "ENGRAM_CUDA_PROJ";

/// The environment variable that says where a prefill's gate sums are formed: `pass` (the
/// default: a gate kernel of its own after the projection, reading the key columns it wrote) or
/// `epilogue` (in the projection's epilogue, where the layer allows). `pass` is the default
/// because it measured faster with the default kernel: on an H200, 814 against 847 us for the
/// demo layer's bf16 prefill of 16384 tokens (`benches/NOTES.md`, 2026-12-04).
pub(crate) const GATE_OVERRIDE: &str = "ENGRAM_CUDA_GATE";

/// The meaning of an override's value `requested` (when it is set) among `choices`, the first
/// being the default; any other value is an error naming the variable `var` and the choices.
fn override_choice<T: Copy>(
    var: &str,
    requested: Option<&str>,
    choices: &[(&str, T)],
) -> Result<T> {
    let value = requested.unwrap_or(choices[0].0);
    match choices.iter().find(|(name, _)| *name == value) {
        Some((_, meaning)) => Ok(*meaning),
        None => {
            let names: Vec<_> = choices.iter().map(|(name, _)| *name).collect();
            Err(Error::Backend {
                backend: BACKEND_NAME,
                message: format!("{var}={value:?}: expected one of {}", names.join(", ")),
            })
        }
    }
}

/// Whether a prefill's projection forms the gate's sums in its epilogue, `requested` being
/// [`GATE_OVERRIDE`]'s value when it is set; an unknown value is an error.
pub(crate) fn gate_in_epilogue(requested: Option<&str>) -> Result<bool> {
    override_choice(
        GATE_OVERRIDE,
        requested,
        &[("pass", false), ("epilogue", true)],
    )
}

/// The environment variable that says where a prefill's projection finds its table rows:
/// `inline` (the default: each block gathers its tile's rows from the tables itself, through
/// the row ids the hash wrote) or `first` (the rows are gathered into one `[tokens, d_mem]`
/// matrix first, `gather_rows16`, which the projection then reads as a plain matrix; the
/// kernels with a weight map then bring its tiles by tensor copies too, their `_ab` variants).
/// A decode step always hashes its windows inside the projection.
pub(crate) const ROWS_OVERRIDE: &str = "ENGRAM_CUDA_ROWS";

/// Whether a prefill gathers its rows into a matrix before the projection, `requested` being
/// [`ROWS_OVERRIDE`]'s value when it is set; an unknown value is an error.
pub(crate) fn rows_first(requested: Option<&str>) -> Result<bool> {
    override_choice(
        ROWS_OVERRIDE,
        requested,
        &[("inline", false), ("first", true)],
    )
}

impl Projection {
    /// The choice for a device, `requested` being the override's value when it is set.
    /// `wgmma` is whether the device runs sm_90a code (an sm_90 device). An unknown name, or a
    /// wgmma kernel on a device without it, is an error rather than a silent fallback.
    pub(crate) fn choose(requested: Option<&str>, wgmma: bool) -> Result<Self> {
        let chosen = match requested {
            None => {
                return Ok(if wgmma {
                    Projection::Wgmma
                } else {
                    Projection::Mma
                })
            }
            Some(_) => {
                let choices = Projection::ALL.map(|p| (p.name(), p));
                override_choice(OVERRIDE, requested, &choices)?
            }
        };
        if chosen.needs_sm90a() && !wgmma {
            return Err(Error::Backend {
                backend: BACKEND_NAME,
                message: format!(
                    "{OVERRIDE} asks for a wgmma projection, which needs an sm_90 device"
                ),
            });
        }
        Ok(chosen)
    }

    /// The projection's [`OVERRIDE`] name (and, for a wgmma one, its module's in
    /// [`crate::HOPPER_PTX`]).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Projection::Mma => "mma",
            Projection::MmaWide => "mma-wide",
            Projection::Wgmma => "wgmma",
            Projection::WgmmaWide => "wgmma-wide",
            Projection::WgmmaTma => "wgmma-tma",
            Projection::WgmmaWideTma => "wgmma-wide-tma",
            Projection::WgmmaWs => "wgmma-ws",
            Projection::WgmmaWsTma => "wgmma-ws-tma",
        }
    }

    /// The PTX of the sm_90a module that holds the kernel ([`crate::HOPPER_PTX`]), `None` for
    /// the mma.sync ones (in the fast path's module).
    pub(crate) fn hopper_ptx(self) -> Option<&'static str> {
        crate::HOPPER_PTX
            .iter()
            .find(|(name, _)| *name == self.name())
            .map(|(_, ptx)| *ptx)
    }

    /// Whether the kernel lives in an sm_90a module.
    pub(crate) fn needs_sm90a(self) -> bool {
        matches!(
            self,
            Projection::Wgmma
                | Projection::WgmmaWide
                | Projection::WgmmaTma
                | Projection::WgmmaWideTma
                | Projection::WgmmaWs
                | Projection::WgmmaWsTma
        )
    }

    /// Whether the kernel takes a tensor map of the weights (rows of `K_TILE` elements by
    /// [`Self::width`] outputs a box) as its last parameter.
    pub(crate) fn weight_map(self) -> bool {
        matches!(
            self,
            Projection::WgmmaTma | Projection::WgmmaWideTma | Projection::WgmmaWsTma
        )
    }

    /// The kernel that reads a matrix of rows gathered beforehand ([`ROWS_OVERRIDE`] `first`)
    /// for element suffix `t`: for the kernels with a weight map their `_ab` variant, which
    /// also takes a tensor map of that matrix (rows of `K_TILE` elements by
    /// [`Self::tokens_per_tile`] tokens a box) after the weights'; the others themselves
    /// (`gather` 0).
    pub(crate) fn matrix_kernel(self, t: &str) -> String {
        if self.weight_map() {
            format!("{}ab_{t}", self.kernel_prefix())
        } else {
            self.kernel(t)
        }
    }

    /// Every kernel name of this projection for element suffix `t`: [`Self::kernel`], and
    /// [`Self::matrix_kernel`] where it differs.
    pub(crate) fn kernels(self, t: &str) -> Vec<String> {
        let mut names = vec![self.kernel(t)];
        if self.matrix_kernel(t) != names[0] {
            names.push(self.matrix_kernel(t));
        }
        names
    }

    /// Outputs per block.
    pub(crate) fn width(self) -> usize {
        match self {
            Projection::Mma
            | Projection::Wgmma
            | Projection::WgmmaTma
            | Projection::WgmmaWs
            | Projection::WgmmaWsTma => 128,
            Projection::MmaWide | Projection::WgmmaWide | Projection::WgmmaWideTma => 256,
        }
    }

    /// Columns per segment of the gate's sums the kernel forms in its epilogue (a warp tile's
    /// width: `GateSums` in `kernels/common.cuh`); the hidden size must be a multiple of it.
    pub(crate) fn gate_segment(self) -> usize {
        match self {
            Projection::Mma => 32,
            Projection::MmaWide => 64,
            Projection::Wgmma
            | Projection::WgmmaWide
            | Projection::WgmmaTma
            | Projection::WgmmaWideTma
            | Projection::WgmmaWs
            | Projection::WgmmaWsTma => 128,
        }
    }

    /// The kernel's name for element suffix `t` (`bf16`, `f16`).
    pub(crate) fn kernel(self, t: &str) -> String {
        format!("{}{t}", self.kernel_prefix())
    }

    /// The kernel's name up to its element suffix.
    fn kernel_prefix(self) -> &'static str {
        match self {
            Projection::Mma => "proj_mma_",
            Projection::MmaWide => "proj_mma_wide_",
            Projection::Wgmma => "proj_wgmma_",
            Projection::WgmmaWide => "proj_wgmma_wide_",
            Projection::WgmmaTma => "proj_wgmma_tma_",
            Projection::WgmmaWideTma => "proj_wgmma_wide_tma_",
            Projection::WgmmaWs => "proj_wgmma_ws_",
            Projection::WgmmaWsTma => "proj_wgmma_ws_tma_",
        }
    }

    /// Tokens per tile.
    pub(crate) fn tokens_per_tile(self) -> usize {
        if self.persistent() {
            2 * TOKENS_PER_BLOCK
        } else {
            TOKENS_PER_BLOCK
        }
    }

    /// Threads per block.
    pub(crate) fn threads(self) -> u32 {
        if self.persistent() {
            THREADS + 128
        } else {
            THREADS
        }
    }

    /// Output tiles times token tiles for `outputs` outputs and `tokens` tokens.
    pub(crate) fn tiles(self, outputs: usize, tokens: usize) -> usize {
        outputs.div_ceil(self.width()) * tokens.div_ceil(self.tokens_per_tile())
    }

    /// The launch grid (x, y, z) for `splits` shares of k on a device of `multiprocessors`: one
    /// block per output tile, token tile and split, or for the persistent kernel one block per
    /// multiprocessor at most (each then loops over its share of the tiles).
    pub(crate) fn grid(
        self,
        outputs: usize,
        tokens: usize,
        splits: usize,
        multiprocessors: usize,
    ) -> [usize; 3] {
        if self.persistent() {
            [
                (self.tiles(outputs, tokens) * splits).min(multiprocessors),
                1,
                1,
            ]
        } else {
            [
                outputs.div_ceil(self.width()),
                tokens.div_ceil(self.tokens_per_tile()),
                splits,
            ]
        }
    }

    /// Whether blocks loop over tiles (grid = one block per multiprocessor at most) rather than
    /// one block per tile (grid = output tiles x token tiles x splits).
    pub(crate) fn persistent(self) -> bool {
        matches!(self, Projection::WgmmaWs | Projection::WgmmaWsTma)
    }

    /// Dynamic shared memory of one block for a layer of `heads` heads: the pipeline's stages of
    /// a token tile and a width x 64 weight tile (16-bit elements), the row table (the tile's
    /// tokens x heads u32), and for wgmma 1024 bytes of slack to align the tiles (plus the
    /// warp-specialised kernel's eight 8-byte mbarriers, the TMA kernel's 64 bytes of them). The
    /// narrow wgmma kernels keep to 3 stages so that two blocks share a multiprocessor.
    pub(crate) fn shared_bytes(self, heads: usize) -> usize {
        let (stages, slack) = match self {
            Projection::Mma | Projection::MmaWide => (3, 0),
            Projection::Wgmma => (3, 1024),
            Projection::WgmmaTma => (3, 1024 + 64),
            Projection::WgmmaWideTma => (4, 1024 + 64),
            Projection::WgmmaWide => (4, 1024),
            Projection::WgmmaWs | Projection::WgmmaWsTma => (4, 1024 + 64),
        };
        let rows = self.tokens_per_tile();
        // The warp-specialised kernel's producer reads the row ids itself (no row table).
        let table = if self.persistent() {
            0
        } else {
            rows * heads * 4
        };
        slack + stages * (rows + self.width()) * K_TILE * 2 + table
    }

    /// Every projection kernel (the backend raises each one's shared memory limit).
    pub(crate) const ALL: [Projection; 8] = [
        Projection::Mma,
        Projection::MmaWide,
        Projection::Wgmma,
        Projection::WgmmaWide,
        Projection::WgmmaTma,
        Projection::WgmmaWideTma,
        Projection::WgmmaWs,
        Projection::WgmmaWsTma,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_names_a_kernel_or_is_refused() {
        assert_eq!(Projection::choose(None, true).ok(), Some(Projection::Wgmma));
        assert_eq!(Projection::choose(None, false).ok(), Some(Projection::Mma));
        assert_eq!(
            Projection::choose(Some("mma-wide"), true).ok(),
            Some(Projection::MmaWide)
        );
        assert_eq!(
            Projection::choose(Some("wgmma-wide"), true).ok(),
            Some(Projection::WgmmaWide)
        );
        assert_eq!(
            Projection::choose(Some("wgmma-tma"), true).ok(),
            Some(Projection::WgmmaTma)
        );
        assert!(Projection::choose(Some("wgmma"), false).is_err());
        assert!(Projection::choose(Some("wgmma-tma"), false).is_err());
        assert!(Projection::choose(Some("fast"), true).is_err());
    }

    #[test]
    fn every_kernel_is_chosen_by_its_name_and_lives_where_its_module_is() {
        for p in Projection::ALL {
            assert_eq!(Projection::choose(Some(p.name()), true).ok(), Some(p));
            assert_eq!(p.needs_sm90a(), p.hopper_ptx().is_some(), "{}", p.name());
        }
    }

    #[test]
    fn only_the_tensor_copy_kernels_have_a_matrix_variant() {
        // hopper.cu's HOPPER_WGMMA_TMA and HOPPER_WGMMA_WS_TMA: the _tma_ab_ kernels.
        assert_eq!(
            Projection::WgmmaTma.kernels("bf16"),
            ["proj_wgmma_tma_bf16", "proj_wgmma_tma_ab_bf16"]
        );
        assert_eq!(
            Projection::WgmmaWideTma.matrix_kernel("f16"),
            "proj_wgmma_wide_tma_ab_f16"
        );
        assert_eq!(
            Projection::WgmmaWsTma.kernels("bf16"),
            ["proj_wgmma_ws_tma_bf16", "proj_wgmma_ws_tma_ab_bf16"]
        );
        for p in Projection::ALL {
            assert_eq!(p.kernels("f16").len(), if p.weight_map() { 2 } else { 1 });
        }
        assert_eq!(Projection::Wgmma.matrix_kernel("bf16"), "proj_wgmma_bf16");
    }

    #[test]
    fn the_gate_and_rows_overrides_have_a_default_two_values_and_refuse_others() {
        type Parse = fn(Option<&str>) -> Result<bool>;
        // (parse, default value, the other value, a near miss)
        let overrides: [(Parse, &str, &str, &str); 2] = [
            (gate_in_epilogue, "pass", "epilogue", "Pass"),
            (rows_first, "inline", "first", "First"),
        ];
        for (parse, default, other, near_miss) in overrides {
            assert!(!parse(None).unwrap());
            assert!(!parse(Some(default)).unwrap());
            assert!(parse(Some(other)).unwrap());
            assert!(parse(Some(near_miss)).is_err());
        }
    }

    #[test]
    fn gate_segments_are_one_warp_tile_wide() {
        // fused.cu: a proj_mma warp holds BN / 4 columns; hopper.cu: a wgmma accumulator 128.
        assert_eq!(Projection::Mma.gate_segment(), 128 / 4);
        assert_eq!(Projection::MmaWide.gate_segment(), 256 / 4);
        for p in [
            Projection::Wgmma,
            Projection::WgmmaWide,
            Projection::WgmmaTma,
            Projection::WgmmaWideTma,
            Projection::WgmmaWs,
            Projection::WgmmaWsTma,
        ] {
            assert_eq!(p.gate_segment(), 128);
            // Whole segments per block: a segment never straddles two blocks.
            assert_eq!(p.width() % p.gate_segment(), 0);
        }
    }

    #[test]
    fn grids_cover_every_tile_once() {
        // The demo layer's prefill: 5120 outputs, 16384 tokens, one split, 132 multiprocessors.
        assert_eq!(Projection::Wgmma.grid(5120, 16384, 1, 132), [40, 128, 1]);
        assert_eq!(Projection::MmaWide.grid(5120, 16384, 1, 132), [20, 128, 1]);
        // 40 x 64 tiles of 256 tokens x 128 outputs for the persistent kernel, one block per
        // multiprocessor.
        assert_eq!(Projection::WgmmaWs.tiles(5120, 16384), 40 * 64);
        assert_eq!(Projection::WgmmaWs.grid(5120, 16384, 1, 132), [132, 1, 1]);
        // A decode step of 3 tokens split six ways: fewer work items than multiprocessors.
        assert_eq!(Projection::WgmmaWs.grid(5120, 3, 6, 132), [132, 1, 1]);
        assert_eq!(Projection::WgmmaWs.grid(256, 3, 6, 132), [12, 1, 1]);
        assert_eq!(Projection::Mma.grid(256, 3, 6, 132), [2, 1, 6]);
    }

    #[test]
    fn shared_memory_matches_the_kernels_contracts() {
        // fused.cu: 3 (128 + BN) 64 * 2 + 512 heads; hopper.cu: 1024 + STAGES (128 + BN) 128 +
        // 512 heads.
        assert_eq!(Projection::Mma.shared_bytes(16), 98_304 + 8192);
        assert_eq!(Projection::MmaWide.shared_bytes(16), 147_456 + 8192);
        assert_eq!(Projection::Wgmma.shared_bytes(16), 1024 + 98_304 + 8192);
        // Two narrow wgmma blocks fit an H100 multiprocessor's 228 KiB (1 KiB reserved each),
        // with the TMA kernel's three 8-byte mbarriers (64 bytes kept for them) too.
        assert!(2 * (Projection::Wgmma.shared_bytes(16) + 1024) <= 228 * 1024);
        assert_eq!(
            Projection::WgmmaTma.shared_bytes(16),
            Projection::Wgmma.shared_bytes(16) + 64
        );
        assert!(2 * (Projection::WgmmaTma.shared_bytes(16) + 1024) <= 228 * 1024);
        assert_eq!(Projection::WgmmaTma.kernel("f16"), "proj_wgmma_tma_f16");
        assert!(Projection::WgmmaTma.weight_map() && !Projection::Wgmma.weight_map());
        assert_eq!(
            Projection::WgmmaWideTma.shared_bytes(16),
            Projection::WgmmaWide.shared_bytes(16) + 64
        );
        assert!(Projection::WgmmaWideTma.shared_bytes(16) <= 227 * 1024);
        assert_eq!(
            Projection::choose(Some("wgmma-wide-tma"), true).ok(),
            Some(Projection::WgmmaWideTma)
        );
        assert_eq!(
            Projection::WgmmaWide.shared_bytes(16),
            1024 + 196_608 + 8192
        );
        assert_eq!(Projection::WgmmaWide.kernel("bf16"), "proj_wgmma_wide_bf16");
        // hopper.cu, warp-specialised: 1024 + 4 (256 + 128) 128 + 64, no row table.
        assert_eq!(Projection::WgmmaWs.shared_bytes(16), 1024 + 196_608 + 64);
        assert!(Projection::WgmmaWs.shared_bytes(16) <= 227 * 1024);
        // The tensor-copy variant: the same ring and barriers, the same persistent grid.
        assert_eq!(
            Projection::WgmmaWsTma.shared_bytes(16),
            Projection::WgmmaWs.shared_bytes(16)
        );
        assert_eq!(
            Projection::WgmmaWsTma.grid(5120, 16384, 1, 132),
            [132, 1, 1]
        );
        assert_eq!(Projection::WgmmaWsTma.threads(), 384);
        assert_eq!(
            Projection::choose(Some("wgmma-ws-tma"), true).ok(),
            Some(Projection::WgmmaWsTma)
        );
    }
}
