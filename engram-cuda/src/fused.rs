//! The fast path of the layer (`kernels/fused.cu`): cached hash parameters, a reusable device
//! workspace, and the prefill and decode of 16-bit layers on the backend's stream: hash
//! (reciprocal modulo), projection on tensor cores with the rows gathered into shared memory (for
//! a small batch split into shares of k, the last share of each tile summing them), gate scales
//! (from the key columns, or with `ENGRAM_CUDA_GATE=epilogue` from the sums the projection formed
//! in its epilogue, where the hidden size allows), then value + convolution + SiLU. Four launches
//! for a prefill; two for a decode step, whose projection hashes each sequence's window itself
//! and whose last launch does the gate and the convolution and advances the id history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cust::memory::DeviceBuffer;
use engram_core::hash::LayerHash;
use engram_core::reference::{check, conv_history_len};
use engram_core::{
    check_decode, check_prefill, DType, DeviceEngramLayer, DeviceEngramState, Element, Error,
    Result,
};

use crate::device::{
    cuda_err, matrix_tensor_map, ptr, suffix, u32_of, Arg, CudaBackend, CudaBuffer, MAX_BLOCKS,
    THREADS,
};
use crate::projection::{Projection, K_TILE, PROJ_WARPS, TOKENS_PER_BLOCK};
use crate::reciprocal::Reciprocal;
use crate::BACKEND_NAME;

/// Whether `kernel` lives in the fast-path module.
pub(crate) fn is_fused(kernel: &str) -> bool {
    crate::FUSED_KERNELS.iter().any(|k| kernel.starts_with(k))
}

/// Whether `kernel` lives in an sm_90a module (the backend loads only its projection's).
pub(crate) fn is_hopper(kernel: &str) -> bool {
    crate::HOPPER_KERNELS.iter().any(|k| kernel.starts_with(k))
}

/// Threads of a `gate_scales` block (one block per token).
const GATE_THREADS: u32 = 256;
/// `gate_scales_vec`: threads per block, and the most branches its shared memory holds.
const GATE_VEC_THREADS: u32 = 128;
const GATE_VEC_MAX_M: usize = 16;
/// `conv_out_vec`: threads per block, channels per thread, tokens per thread (a chain `dil`
/// apart).
const CONV_VEC_THREADS: u32 = 128;
const CONV_VEC_CH: usize = 4;
const CONV_VEC_RUN: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half-written that matters here.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a buffer starts on a 16-byte boundary (what the kernels' 16-byte loads need).
fn aligned16<T: Element>(b: &CudaBuffer<T>) -> bool {
    b.device_ptr() % 16 == 0
}

/// The tap count the vector convolution kernels (`conv_out_vec*`, `gate_conv_decode_vec*`)
/// unroll for a convolution of `kernel_size` taps, if one does (at most 8).
fn conv_vec_width(kernel_size: usize) -> Option<usize> {
    match kernel_size {
        0..=4 => Some(4),
        5..=8 => Some(8),
        _ => None,
    }
}

/// Where a projection takes its tokens' table rows (`RowSource` in `kernels/common.cuh`).
#[derive(Clone, Copy)]
pub(crate) enum RowSource<'a> {
    /// Computed beforehand (`hash_rows_fast`), `[tokens, heads]` at this device address.
    Hashed(u64),
    /// Gathered beforehand (`gather_rows16` of the hashed rows): the rows themselves, a
    /// `[tokens, d_mem]` matrix at this device address, which the projection reads as it is
    /// (`gather` 0).
    Matrix(u64),
    /// A decode step's windows (`history`, then `ids`), hashed by the projection itself; bad ids
    /// recorded into the device word at `status` (0: validated beforehand).
    Windows {
        history: &'a CudaBuffer<u32>,
        ids: &'a CudaBuffer<u32>,
        status: u64,
    },
}

/// One layer's hash parameters on the device.
pub(crate) struct HashParams {
    pub(crate) mult: CudaBuffer<u64>,
    pub(crate) sizes: CudaBuffer<u32>,
    pub(crate) magic: CudaBuffer<u64>,
    pub(crate) shift: CudaBuffer<u32>,
    pub(crate) offsets: CudaBuffer<u64>,
}

type ParamsKey = (Vec<u64>, Vec<u32>, Vec<u64>);

/// Hash parameters by layer contents, so that each op does not upload them again (and, in
/// decode, wait for the upload).
#[derive(Default)]
pub(crate) struct ParamsCache {
    map: Mutex<HashMap<ParamsKey, Arc<HashParams>>>,
}

/// At most this many layers' parameters are kept (a model has a handful of Engram layers).
const PARAMS_KEPT: usize = 64;

impl ParamsCache {
    pub(crate) fn get(
        &self,
        layer: &LayerHash,
        up64: impl Fn(&[u64]) -> Result<CudaBuffer<u64>>,
        up32: impl Fn(&[u32]) -> Result<CudaBuffer<u32>>,
    ) -> Result<Arc<HashParams>> {
        let key = (
            layer.multipliers.clone(),
            layer.table_sizes.clone(),
            layer.offsets.clone(),
        );
        let mut map = lock(&self.map);
        if let Some(p) = map.get(&key) {
            return Ok(Arc::clone(p));
        }
        let recips = layer
            .table_sizes
            .iter()
            .map(|&d| {
                Reciprocal::new(d).ok_or(Error::Backend {
                    backend: BACKEND_NAME,
                    message: "a hash table of 0 rows".into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let magic: Vec<u64> = recips.iter().map(|r| r.magic).collect();
        let shift: Vec<u32> = recips.iter().map(|r| r.shift).collect();
        let params = Arc::new(HashParams {
            mult: up64(&layer.multipliers)?,
            sizes: up32(&layer.table_sizes)?,
            magic: up64(&magic)?,
            shift: up32(&shift)?,
            offsets: up64(&layer.offsets)?,
        });
        if map.len() >= PARAMS_KEPT {
            map.clear();
        }
        map.insert(key, Arc::clone(&params));
        Ok(params)
    }
}

/// Device scratch memory reused by every fast-path call (ordered on the one stream, so a call
/// may reuse it while the previous one still runs); it grows to the largest call's needs.
#[derive(Default)]
pub(crate) struct Workspace {
    buffer: Mutex<Option<DeviceBuffer<u8>>>,
}

/// Byte offsets of the pieces of one call's scratch, each 256-byte aligned.
struct Carve {
    next: usize,
}

impl Carve {
    fn take(&mut self, bytes: usize) -> usize {
        let at = self.next;
        self.next += bytes.div_ceil(256) * 256;
        at
    }
}

/// The temporaries of one fast-path call, as device addresses.
struct Scratch {
    /// The split projection's counters (`proj_*` kernels' launch contract), at the start of
    /// every scratch so that each call finds them as the last left them: zero.
    counters: u64,
    /// A prefill's table rows (`hash_rows_fast`); a decode step's projection hashes its own.
    rows: u64,
    /// A prefill's sequence start of each token (`hash_rows_fast`), for the convolution.
    starts: u64,
    proj: u64,
    alpha: u64,
    nscale: u64,
    /// f32 partial sums of a split projection, `[splits, tokens, (M + 1) d]`.
    partial: u64,
    splits: usize,
    /// The gate's sums the projection forms in its epilogue (`GateSums` in
    /// `kernels/common.cuh`), `[tokens, (M + 1) d / segment]` f32 quadruples; 0 when the
    /// projection writes the key columns instead.
    sums: u64,
    /// Columns per segment of `sums` (0 without them).
    segment: usize,
    /// A prefill's rows gathered into a `[tokens, d_mem]` matrix ([`Plan::rows_first`]), 0
    /// without it.
    matrix: u64,
}

/// How one call lays out its projection, worked out once per call from the layer, the batch
/// and the backend's choices (so that a call's scratch size and its launches agree).
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Shares of k per projection tile ([`CudaBackend::proj_splits`]).
    splits: usize,
    /// Columns per segment of the gate's sums when the projection forms them in its epilogue.
    segment: Option<usize>,
    /// Whether the rows are gathered into a matrix before the projection (a prefill with
    /// `ENGRAM_CUDA_ROWS=first`).
    rows_first: bool,
}

impl CudaBackend {
    /// Runs `f` with `bytes` of workspace at the device address it is given.
    fn with_workspace<R>(&self, bytes: usize, f: impl FnOnce(u64) -> Result<R>) -> Result<R> {
        let mut guard = lock(&self.workspace.buffer);
        if guard.as_ref().is_none_or(|b| b.len() < bytes) {
            // Free the old one first (cuMemFree waits for the work that uses it).
            *guard = None;
            *guard = Some(DeviceBuffer::zeroed(bytes.max(1 << 20)).map_err(cuda_err)?);
        }
        let base = guard.as_ref().map_or(0, |b| b.as_device_ptr().as_raw());
        f(base)
    }

    /// The hash of a packed batch (`hash_rows_fast`) with the layer's parameters `p`, into the
    /// device address `rows`, and each token's sequence start into `starts` unless it is 0:
    /// safe whatever the ids and lengths hold; nothing written when the status word at
    /// `status` (0: none) holds a fault.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_hash(
        &self,
        layer: &LayerHash,
        p: &HashParams,
        heads_per_order: usize,
        pad: u32,
        ids: &CudaBuffer<u32>,
        cu_seqlens: &CudaBuffer<u32>,
        status: u64,
        rows: u64,
        starts: u64,
    ) -> Result<()> {
        if ids.len == 0 {
            return Ok(());
        }
        self.launch_n(
            "hash_rows_fast",
            ids.len as u64,
            &[
                Arg::U64(0),
                ptr(ids),
                Arg::U64(ids.len as u64),
                ptr(cu_seqlens),
                Arg::U32(u32_of("sequences", cu_seqlens.len - 1)?),
                ptr(&p.mult),
                Arg::U32(u32_of("max_ngram_size", layer.multipliers.len())?),
                ptr(&p.sizes),
                ptr(&p.magic),
                ptr(&p.shift),
                Arg::U32(u32_of("heads", heads_per_order)?),
                Arg::U32(pad),
                Arg::U64(status),
                Arg::U64(rows),
                Arg::U64(starts),
            ],
        )
    }

    /// The hash of decode windows (`hash_decode_fast`) with the layer's parameters `p`, into
    /// the device address `rows`; nothing written when the status word at `status` (0: none)
    /// holds a fault.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_hash_decode(
        &self,
        layer: &LayerHash,
        p: &HashParams,
        heads_per_order: usize,
        history: &CudaBuffer<u32>,
        ids: &CudaBuffer<u32>,
        status: u64,
        rows: u64,
    ) -> Result<()> {
        if ids.len == 0 {
            return Ok(());
        }
        let heads = (layer.multipliers.len() - 1) * heads_per_order;
        self.launch_n(
            "hash_decode_fast",
            (ids.len * heads) as u64,
            &[
                ptr(history),
                ptr(ids),
                Arg::U64(ids.len as u64),
                ptr(&p.mult),
                Arg::U32(u32_of("max_ngram_size", layer.multipliers.len())?),
                ptr(&p.sizes),
                ptr(&p.magic),
                ptr(&p.shift),
                Arg::U32(u32_of("heads", heads_per_order)?),
                Arg::U64(status),
                Arg::U64(rows),
            ],
        )
    }

    /// Checks that every id of a decode window (`ids`, then `history`) is below `limit` on the
    /// device, runs `then` (the launches that depend on it, given the status word's address:
    /// each must write nothing when it holds a fault) and reads the word once: the oracle's
    /// error for the first bad id, if any.
    pub(crate) fn check_window_ids_then(
        &self,
        ids: &CudaBuffer<u32>,
        history: &CudaBuffer<u32>,
        limit: u64,
        then: impl FnOnce(u64) -> Result<()>,
    ) -> Result<()> {
        let total = ids.len + history.len;
        if total == 0 {
            // No id to check: nothing to wait for either.
            return then(0);
        }
        let found = self.checked(|first| {
            self.launch_n(
                "first_id_at_or_above2",
                total as u64,
                &[
                    ptr(ids),
                    Arg::U64(ids.len as u64),
                    ptr(history),
                    Arg::U64(history.len as u64),
                    Arg::U64(limit),
                    Arg::U64(first),
                ],
            )?;
            then(first)
        })?;
        let Some(p) = found else {
            return Ok(());
        };
        let p = p as usize;
        let id = if p < ids.len {
            self.host(ids)?[p]
        } else {
            self.host(history)?[p - ids.len]
        };
        Err(Error::IdOutOfRange {
            position: p % ids.len.max(1),
            id: u64::from(id),
            limit,
        })
    }

    /// The gather with 16-byte loads (`gather_rows16`) of the `n_rows` rows whose ids are at
    /// device address `rows` into the `[n_rows, d_head]` elements at `out`, when rows are whole
    /// 16-byte chunks and both the table and `out` are 16-byte aligned, writing nothing unless
    /// the word at `status` (when not 0) is all ones; `false` (nothing launched) otherwise.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_gather16<T: Element>(
        &self,
        table: &CudaBuffer<T>,
        d_head: usize,
        params: &HashParams,
        rows: u64,
        n_rows: usize,
        status: u64,
        out: u64,
    ) -> Result<bool> {
        let row_bytes = d_head * std::mem::size_of::<T>();
        if row_bytes % 16 != 0 || table.device_ptr() % 16 != 0 || out % 16 != 0 {
            return Ok(false);
        }
        let row_chunks = row_bytes / 16;
        // Each row takes min(row_chunks, THREADS) threads; each thread moves two rows.
        let per_block = (THREADS as usize / row_chunks.min(THREADS as usize)) as u64;
        let blocks = (n_rows as u64).div_ceil(2 * per_block).min(MAX_BLOCKS);
        self.launch(
            "gather_rows16",
            blocks as u32,
            THREADS,
            0,
            &[
                ptr(table),
                Arg::U32(u32_of("row chunks", row_chunks)?),
                ptr(&params.offsets),
                Arg::U32(u32_of("heads", params.sizes.len)?),
                Arg::U64(rows),
                Arg::U64(n_rows as u64),
                Arg::U64(status),
                Arg::U64(out),
            ],
        )?;
        Ok(true)
    }

    /// Whether the fast path serves this layer: 16-bit elements, rows and inputs in whole
    /// 16-byte chunks, aligned table and weights, and at most 65535 tiles of tokens.
    pub(crate) fn fast_path_fits<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        tokens: usize,
    ) -> bool {
        let c = &layer.config;
        matches!(T::DTYPE, DType::BF16 | DType::F16)
            && c.d_head() % 8 == 0
            && c.d_mem() % 8 == 0
            && ((c.hc_mult + 1) * c.hidden_size) % 2 == 0
            && aligned16(&layer.table)
            && aligned16(&layer.proj_weight)
            && tokens.div_ceil(TOKENS_PER_BLOCK) <= 65_535
            && c.d_mem() <= u32::MAX as usize
            && Projection::Mma.shared_bytes(c.num_heads()) <= self.shared_optin
            && layer.hash.total_rows() <= u64::from(u32::MAX)
            // A fault's flat position fits the status word (a decode step's window positions;
            // with the grid's limit above, this also keeps a prefill below 2^31 ids).
            && tokens.saturating_mul(c.max_ngram_size) < 1 << 31
    }

    /// The stacked projection of `tokens` tokens whose table rows come from `rows`, into
    /// `s.proj` (split into shares of k when `s.splits` > 1, the last share of each tile summing
    /// them). With `s.sums` the key columns are not written: the gate's sums of each segment go
    /// to `s.sums` instead, with `hidden` read for them.
    #[allow(clippy::too_many_arguments)]
    fn launch_projection<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        tokens: usize,
        p: &HashParams,
        s: &Scratch,
        hidden: &CudaBuffer<T>,
        rows: RowSource<'_>,
    ) -> Result<()> {
        let c = &layer.config;
        // The A operand: the tables, gathered through row ids (`gather` 1), or a matrix.
        let (table, hashed, gather, history, ids, status) = match rows {
            RowSource::Hashed(at) => (layer.table.device_ptr(), at, 1, 0, 0, 0),
            RowSource::Matrix(at) => (at, 0, 0, 0, 0, 0),
            RowSource::Windows {
                history,
                ids,
                status,
            } => (
                layer.table.device_ptr(),
                0,
                1,
                history.device_ptr(),
                ids.device_ptr(),
                status,
            ),
        };
        let matrix = matches!(rows, RowSource::Matrix(_));
        let n = (c.hc_mult + 1) * c.hidden_size;
        let t = suffix(T::DTYPE)?;
        let projection = self.projection_for(layer);
        let [x, y, z] = projection.grid(n, tokens, s.splits, self.multiprocessors);
        let mut args = vec![
            Arg::U64(table),
            Arg::U32(u32_of("d_head", c.d_head())?),
            ptr(&p.offsets),
            Arg::U64(hashed),
            Arg::U32(u32_of("heads", c.num_heads())?),
            Arg::U32(gather),
            ptr(&layer.proj_weight),
            ptr(&layer.proj_bias),
            Arg::U32(u32_of("tokens", tokens)?),
            Arg::U32(u32_of("d_mem", c.d_mem())?),
            Arg::U32(u32_of("projection outputs", n)?),
            Arg::U32(u32_of("splits", s.splits)?),
            Arg::U64(s.partial),
            Arg::U64(s.counters),
            Arg::U64(s.proj),
            ptr(hidden),
            ptr(&layer.key_norm),
            ptr(&layer.query_norm),
            Arg::U32(u32_of("m", c.hc_mult)?),
            Arg::U32(u32_of("d", c.hidden_size)?),
            Arg::U64(s.sums),
            Arg::U64(history),
            Arg::U64(ids),
            ptr(&p.mult),
            ptr(&p.sizes),
            ptr(&p.magic),
            ptr(&p.shift),
            Arg::U32(u32_of("id history", c.max_ngram_size - 1)?),
            Arg::U32(u32_of("heads", c.n_head_per_ngram)?),
            Arg::U64(layer.compressed_vocab),
            Arg::U64(status),
        ];
        if projection.weight_map() {
            // Encoded per launch (a host call, no device work): nothing to cache per layer.
            args.push(Arg::Map(matrix_tensor_map::<T>(
                layer.proj_weight.device_ptr(),
                layer.proj_weight.len,
                n,
                c.d_mem(),
                projection.width(),
            )?));
            if matrix {
                args.push(Arg::Map(matrix_tensor_map::<T>(
                    table,
                    tokens * c.d_mem(),
                    tokens,
                    c.d_mem(),
                    projection.tokens_per_tile(),
                )?));
            }
        }
        let kernel = if matrix {
            projection.matrix_kernel(t)
        } else {
            projection.kernel(t)
        };
        self.launch(
            &kernel,
            (
                u32_of("projection blocks", x)?,
                u32_of("token tiles", y)?,
                u32_of("splits", z)?,
            ),
            projection.threads(),
            u32_of("shared memory", projection.shared_bytes(c.num_heads()))?,
            &args,
        )
    }

    /// The columns per segment of the gate's sums when a prefill's projection can form them in
    /// its epilogue (splits 1, the hidden size a multiple of the kernel's segment, the hidden
    /// state and the norms' weights aligned for its pair loads), `None` when the gate takes a
    /// kernel of its own.
    fn gate_sums_segment<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        hidden: &CudaBuffer<T>,
        splits: usize,
    ) -> Option<usize> {
        let segment = self.projection_for(layer).gate_segment();
        let d = layer.config.hidden_size;
        (self.gate_epilogue
            && splits == 1
            && d % segment == 0
            && [hidden, &layer.key_norm, &layer.query_norm]
                .into_iter()
                .all(aligned16))
        .then_some(segment)
    }

    /// The gate scales of `tokens` tokens from the sums the projection formed in its epilogue
    /// (`gate_from_sums`): alpha into `s.alpha`, and with a convolution the norm scales into
    /// `s.nscale`; nothing when the status word at `status` (0: none) holds a failure.
    fn launch_gate_from_sums<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        tokens: usize,
        s: &Scratch,
        status: u64,
    ) -> Result<()> {
        let c = &layer.config;
        let m = c.hc_mult;
        self.launch_n(
            &format!("gate_from_sums_{}", suffix(T::DTYPE)?),
            (tokens * m) as u64,
            &[
                Arg::U64(s.sums),
                Arg::U32(u32_of("gate segment", s.segment)?),
                Arg::U64(tokens as u64),
                Arg::U32(u32_of("m", m)?),
                Arg::U32(u32_of("d", c.hidden_size)?),
                Arg::U32(u32::from(c.short_conv)),
                Arg::U64(status),
                Arg::U64(s.alpha),
                Arg::U64(s.nscale),
            ],
        )
    }

    /// The gate scales of `tokens` tokens from the projection in `s.proj` (`gate_scales`, or
    /// `gate_scales_vec` when rows are whole 16-byte chunks): alpha into `s.alpha`, and with a
    /// convolution the norm scales into `s.nscale`; nothing when the status word at `status`
    /// (0: none) holds a failure.
    fn launch_gate<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        tokens: usize,
        hidden: &CudaBuffer<T>,
        s: &Scratch,
        status: u64,
    ) -> Result<()> {
        let c = &layer.config;
        let (m, d) = (c.hc_mult, c.hidden_size);
        let t = suffix(T::DTYPE)?;
        let vec = d % 8 == 0
            && m <= GATE_VEC_MAX_M
            && aligned16(hidden)
            && aligned16(&layer.key_norm)
            && aligned16(&layer.query_norm);
        let (kernel, threads) = if vec {
            (format!("gate_scales_vec_{t}"), GATE_VEC_THREADS)
        } else {
            (format!("gate_scales_{t}"), GATE_THREADS)
        };
        self.launch(
            &kernel,
            tokens.min(MAX_BLOCKS as usize) as u32,
            threads,
            0,
            &[
                Arg::U64(s.proj),
                ptr(hidden),
                ptr(&layer.key_norm),
                ptr(&layer.query_norm),
                Arg::U64(tokens as u64),
                Arg::U32(u32_of("m", m)?),
                Arg::U32(u32_of("d", d)?),
                Arg::U32(u32::from(c.short_conv)),
                Arg::U64(status),
                Arg::U64(s.alpha),
                Arg::U64(s.nscale),
            ],
        )
    }

    /// The arguments the convolution kernels (prefill and decode) begin with: proj, alpha,
    /// nscale, conv_norm, conv_w, count, m, d, kernel, dilation.
    fn conv_args<T: Element>(
        layer: &DeviceEngramLayer<Self, T>,
        count: usize,
        s: &Scratch,
    ) -> Result<[Arg; 10]> {
        let c = &layer.config;
        Ok([
            Arg::U64(s.proj),
            Arg::U64(s.alpha),
            Arg::U64(s.nscale),
            ptr(&layer.conv_norm),
            ptr(&layer.conv_weight),
            Arg::U64(count as u64),
            Arg::U32(u32_of("m", c.hc_mult)?),
            Arg::U32(u32_of("d", c.hidden_size)?),
            Arg::U32(u32_of("kernel", c.kernel_size)?),
            Arg::U32(u32_of("dilation", c.max_ngram_size)?),
        ])
    }

    /// The value, causal convolution and SiLU of a prefill (`conv_out`, or `conv_out_vec` when
    /// rows are whole 16-byte chunks); nothing when the status word at `status` (0: none) holds
    /// a failure.
    fn launch_conv_out<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        tokens: usize,
        cu_seqlens: &CudaBuffer<u32>,
        s: &Scratch,
        out: &CudaBuffer<T>,
        status: u64,
    ) -> Result<()> {
        let c = &layer.config;
        let (m, d) = (c.hc_mult, c.hidden_size);
        let seqs = cu_seqlens.len - 1;
        let t = suffix(T::DTYPE)?;
        let mut args = Self::conv_args(layer, tokens, s)?.to_vec();
        let tail = [
            Arg::U32(u32::from(c.short_conv)),
            Arg::U64(status),
            ptr(out),
        ];
        // conv_out_vec walks chains of CONV_VEC_RUN tokens `dil` apart.
        let dil = c.max_ngram_size.max(1);
        let chains = tokens.div_ceil(CONV_VEC_RUN * dil) * dil;
        // One block per chain and channel block, the channel blocks of a chain adjacent.
        let blocks = chains * (m * d / CONV_VEC_CH).div_ceil(CONV_VEC_THREADS as usize);
        let width = conv_vec_width(c.kernel_size).filter(|_| {
            d % 8 == 0
                && c.max_ngram_size >= 1
                && aligned16(out)
                && (!c.short_conv || (aligned16(&layer.conv_norm) && aligned16(&layer.conv_weight)))
                && blocks <= i32::MAX as usize
        });
        let Some(width) = width else {
            args.extend([ptr(cu_seqlens), Arg::U32(u32_of("sequences", seqs)?)]);
            args.extend(tail);
            return self.launch_n(&format!("conv_out_{t}"), (tokens * m * d) as u64, &args);
        };
        args[5] = Arg::U32(u32_of("tokens", tokens)?);
        // The sequence starts the hash wrote, instead of cu_seqlens.
        args.push(Arg::U64(s.starts));
        args.extend(tail);
        self.launch(
            &format!("conv_out_vec{width}_{t}"),
            (u32_of("convolution blocks", blocks)?, 1, 1),
            CONV_VEC_THREADS,
            0,
            &args,
        )
    }

    /// How many blocks share the k-tiles of each projection tile: enough for two blocks per
    /// multiprocessor when the tiles alone are too few (decode), while the f32 partial sums
    /// stay within the weights' bytes.
    fn proj_splits<T: Element>(&self, layer: &DeviceEngramLayer<Self, T>, tokens: usize) -> usize {
        let c = &layer.config;
        let n = (c.hc_mult + 1) * c.hidden_size;
        let tiles = self.projection_for(layer).tiles(n, tokens);
        let ktiles = c.d_mem().div_ceil(K_TILE);
        if tiles >= self.multiprocessors || ktiles < 2 {
            return 1;
        }
        let wanted = (2 * self.multiprocessors).div_ceil(tiles);
        let by_bytes = (c.d_mem() * std::mem::size_of::<T>() / (4 * tokens.max(1))).max(1);
        let splits = wanted.min(by_bytes).min(ktiles).max(1);
        // No empty splits: each takes ceil(ktiles / splits) k-tiles.
        ktiles.div_ceil(ktiles.div_ceil(splits))
    }

    /// The projection kernel for this layer: the backend's choice when its shared memory (which
    /// grows with the heads' row table) fits the device, otherwise the narrow mma.sync tiles
    /// (which `fast_path_fits` checked).
    fn projection_for<T: Element>(&self, layer: &DeviceEngramLayer<Self, T>) -> Projection {
        let heads = layer.config.num_heads();
        if self.projection.shared_bytes(heads) <= self.shared_optin {
            self.projection
        } else {
            Projection::Mma
        }
    }

    /// Bytes of the split projection's counters: one u32 per warp of each tile, and a split
    /// projection has fewer tiles than multiprocessors ([`Self::proj_splits`]). The same for
    /// every call, so that they stay where the last call left them (zero).
    fn counter_bytes(&self) -> usize {
        self.multiprocessors * PROJ_WARPS * 4
    }

    /// The sizes of one call's temporaries for `tokens` tokens laid out as `plan`, in carve
    /// order.
    fn scratch_sizes<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        tokens: usize,
        plan: Plan,
    ) -> [usize; 9] {
        let c = &layer.config;
        let (m, d) = (c.hc_mult, c.hidden_size);
        let size = std::mem::size_of::<T>();
        let partial = if plan.splits > 1 {
            plan.splits * tokens * (m + 1) * d * 4
        } else {
            0
        };
        [
            self.counter_bytes(),
            tokens * c.num_heads() * 4,
            tokens * 4,
            tokens * (m + 1) * d * size,
            tokens * m * size,
            tokens * m * 4,
            partial,
            plan.segment
                .map_or(0, |seg| tokens * ((m + 1) * d / seg) * 16),
            if plan.rows_first {
                tokens * c.d_mem() * size
            } else {
                0
            },
        ]
    }

    /// Carves one call's temporaries; `gates` (when given) receives alpha.
    fn scratch<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        tokens: usize,
        plan: Plan,
        base: u64,
        gates: Option<u64>,
    ) -> Scratch {
        let [counters, rows, starts, proj, alpha, nscale, partial, sums, matrix] =
            self.scratch_sizes(layer, tokens, plan);
        let mut carve = Carve { next: 0 };
        let at = |c: &mut Carve, bytes| base + c.take(bytes) as u64;
        Scratch {
            counters: at(&mut carve, counters),
            rows: at(&mut carve, rows),
            starts: at(&mut carve, starts),
            proj: at(&mut carve, proj),
            alpha: gates.unwrap_or(at(&mut carve, alpha)),
            nscale: at(&mut carve, nscale),
            partial: at(&mut carve, partial),
            splits: plan.splits,
            sums: if plan.segment.is_some() {
                at(&mut carve, sums)
            } else {
                0
            },
            segment: plan.segment.unwrap_or(0),
            matrix: if plan.rows_first {
                at(&mut carve, matrix)
            } else {
                0
            },
        }
    }

    /// Bytes of [`Self::scratch`].
    fn scratch_bytes<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        tokens: usize,
        plan: Plan,
    ) -> usize {
        self.scratch_sizes(layer, tokens, plan)
            .iter()
            .map(|b| b.div_ceil(256) * 256)
            .sum()
    }

    /// The layout of a prefill of `tokens` tokens (both [`Self::prefill_scratch_bytes`] and
    /// [`Self::enqueue_prefill`] follow it).
    fn prefill_plan<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        hidden: &CudaBuffer<T>,
        tokens: usize,
    ) -> Plan {
        let splits = self.proj_splits(layer, tokens);
        Plan {
            splits,
            segment: self.gate_sums_segment(layer, hidden, splits),
            rows_first: self.rows_first,
        }
    }

    /// The layout of a decode step of `seqs` sequences: its gate is summed by its last launch
    /// from the key columns, and its projection hashes each window itself.
    fn decode_plan<T: Element>(&self, layer: &DeviceEngramLayer<Self, T>, seqs: usize) -> Plan {
        Plan {
            splits: self.proj_splits(layer, seqs),
            segment: None,
            rows_first: false,
        }
    }

    /// The prefill on the fast path; `Ok(false)` when the layer does not fit it (nothing done).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fused_prefill<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        ids: &CudaBuffer<u32>,
        cu_seqlens: &CudaBuffer<u32>,
        hidden: &CudaBuffer<T>,
        out: &mut CudaBuffer<T>,
        gates: Option<&mut CudaBuffer<T>>,
        state: Option<&mut DeviceEngramState<Self, T>>,
    ) -> Result<bool> {
        let (tokens, _) = check_prefill(
            self,
            layer,
            ids,
            cu_seqlens,
            hidden,
            out,
            gates.as_deref(),
            state.as_deref(),
        )?;
        let gates = gates.map(|g| g.device_ptr());
        if tokens == 0 || !self.fast_path_fits(layer, tokens) {
            return Ok(false);
        }
        // The batch is checked on the device by the first launch and every launch that writes
        // an output tests the status word: one wait, at the end.
        let bytes = self.prefill_scratch_bytes(layer, hidden, tokens);
        self.with_workspace(bytes, |base| {
            self.check_batch_then(ids, cu_seqlens, tokens, layer.compressed_vocab, |status| {
                self.enqueue_prefill(
                    layer, ids, cu_seqlens, hidden, out, gates, state, status, base,
                )
            })
        })?;
        Ok(true)
    }

    /// Bytes of scratch one prefill of `tokens` tokens needs (see [`Self::enqueue_prefill`]).
    pub(crate) fn prefill_scratch_bytes<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        hidden: &CudaBuffer<T>,
        tokens: usize,
    ) -> usize {
        self.scratch_bytes(layer, tokens, self.prefill_plan(layer, hidden, tokens))
    }

    /// The launches of a prefill on the fast path (shapes checked, the layer fitting), after the
    /// batch's check (`launch_batch_check`, into the status word at `status`), with no host
    /// synchronisation and no allocation: the hash and the projection (safe on any ids and
    /// lengths: rows stay in range, only scratch is written), then the kernels that write `out`,
    /// `gates` and `state`, each of which writes nothing when the word holds a failure. `base` is
    /// the device address of [`Self::prefill_scratch_bytes`] of scratch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn enqueue_prefill<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        ids: &CudaBuffer<u32>,
        cu_seqlens: &CudaBuffer<u32>,
        hidden: &CudaBuffer<T>,
        out: &mut CudaBuffer<T>,
        gates: Option<u64>,
        state: Option<&mut DeviceEngramState<Self, T>>,
        status: u64,
        base: u64,
    ) -> Result<()> {
        let c = &layer.config;
        let (m, d) = (c.hc_mult, c.hidden_size);
        let tokens = ids.len;
        let seqs = cu_seqlens.len - 1;
        let t = suffix(T::DTYPE)?;
        let params = self.hash_params(&layer.hash)?;
        let plan = self.prefill_plan(layer, hidden, tokens);
        let s = self.scratch(layer, tokens, plan, base, gates);
        self.launch_hash(
            &layer.hash,
            &params,
            c.n_head_per_ngram,
            layer.compressed_pad_id,
            ids,
            cu_seqlens,
            // Not gated: the projection reads every row it writes (and the convolution, which
            // is, every start).
            0,
            s.rows,
            s.starts,
        )?;
        let rows = if plan.rows_first {
            // Not gated either (scratch only; every row id is in its table).
            let launched = self.launch_gather16(
                &layer.table,
                c.d_head(),
                &params,
                s.rows,
                tokens * c.num_heads(),
                0,
                s.matrix,
            )?;
            // `fast_path_fits` holds it (whole 16-byte chunks, an aligned table; scratch is
            // aligned), so this is a broken invariant, not bad input.
            if !launched {
                return Err(Error::Backend {
                    backend: BACKEND_NAME,
                    message: "the fast path's rows do not fit the 16-byte gather".into(),
                });
            }
            RowSource::Matrix(s.matrix)
        } else {
            RowSource::Hashed(s.rows)
        };
        self.launch_projection(layer, tokens, &params, &s, hidden, rows)?;
        if plan.segment.is_some() {
            self.launch_gate_from_sums(layer, tokens, &s, status)?;
        } else {
            self.launch_gate(layer, tokens, hidden, &s, status)?;
        }
        self.launch_conv_out(layer, tokens, cu_seqlens, &s, out, status)?;
        let Some(state) = state else {
            return Ok(());
        };
        let keep = c.max_ngram_size - 1;
        self.launch_n(
            "capture_ids",
            (seqs * keep) as u64,
            &[
                ptr(ids),
                ptr(cu_seqlens),
                Arg::U64(seqs as u64),
                Arg::U32(u32_of("keep", keep)?),
                Arg::U32(layer.compressed_pad_id),
                Arg::U64(status),
                ptr(&state.ids),
            ],
        )?;
        if !c.short_conv {
            return Ok(());
        }
        let hist = conv_history_len(c.kernel_size, c.max_ngram_size);
        self.launch_n(
            &format!("capture_conv_scaled_{t}"),
            (seqs * hist * m * d) as u64,
            &[
                Arg::U64(s.proj),
                Arg::U64(s.nscale),
                ptr(&layer.conv_norm),
                ptr(cu_seqlens),
                Arg::U64(seqs as u64),
                Arg::U32(u32_of("m", m)?),
                Arg::U32(u32_of("d", d)?),
                Arg::U32(u32_of("hist", hist)?),
                Arg::U64(status),
                ptr(&state.conv),
            ],
        )
    }

    /// One decode step on the fast path; `Ok(false)` when the layer does not fit it.
    pub(crate) fn fused_decode<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        ids: &CudaBuffer<u32>,
        hidden: &CudaBuffer<T>,
        state: &mut DeviceEngramState<Self, T>,
        out: &mut CudaBuffer<T>,
        gates: Option<&mut CudaBuffer<T>>,
    ) -> Result<bool> {
        let seqs = check_decode(self, layer, ids, hidden, state, out, gates.as_deref())?;
        let gates = gates.map(|g| g.device_ptr());
        if seqs == 0 || !self.fast_path_fits(layer, seqs) {
            return Ok(false);
        }
        let c = &layer.config;
        check::hash_decode(
            &layer.hash,
            c.n_head_per_ngram,
            state.ids.len,
            ids.len,
            seqs * c.num_heads(),
        )?;
        let vocab = layer.compressed_vocab;
        let bytes = self.decode_scratch_bytes(layer, seqs);
        // The windows are checked by the projection as it hashes them, and the kernel that
        // writes the step's outputs tests the status word: one wait, at the end.
        let found = self.with_workspace(bytes, |base| {
            self.checked(|status| {
                self.enqueue_decode(layer, ids, hidden, state, out, gates, status, base)
            })
        })?;
        match found {
            None => Ok(true),
            Some(word) => Err(decode_fault_in_word(word, seqs, vocab)),
        }
    }

    /// Bytes of scratch one decode step of `seqs` sequences needs (see [`Self::enqueue_decode`]).
    pub(crate) fn decode_scratch_bytes<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        seqs: usize,
    ) -> usize {
        self.scratch_bytes(layer, seqs, self.decode_plan(layer, seqs))
    }

    /// The launches of one decode step on the fast path (shapes checked and the layer fitting),
    /// with no host synchronisation and no allocation: `status` 0 when the ids were validated
    /// beforehand, else the device word that receives the first bad id (and then keeps the step
    /// from writing); `base` the device address of [`Self::decode_scratch_bytes`] of scratch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn enqueue_decode<T: Element>(
        &self,
        layer: &DeviceEngramLayer<Self, T>,
        ids: &CudaBuffer<u32>,
        hidden: &CudaBuffer<T>,
        state: &mut DeviceEngramState<Self, T>,
        out: &mut CudaBuffer<T>,
        gates: Option<u64>,
        status: u64,
        base: u64,
    ) -> Result<()> {
        let c = &layer.config;
        let (m, d) = (c.hc_mult, c.hidden_size);
        let seqs = ids.len;
        let t = suffix(T::DTYPE)?;
        let params = self.hash_params(&layer.hash)?;
        let s = self.scratch(layer, seqs, self.decode_plan(layer, seqs), base, gates);
        // The projection hashes each sequence's window itself (no launch of hash_decode_fast).
        let windows = RowSource::Windows {
            history: &state.ids,
            ids,
            status,
        };
        self.launch_projection(layer, seqs, &params, &s, hidden, windows)?;
        // Both ends of the step's history advance in its last launch (nothing in a step reads
        // the id history after the hash).
        let history = [
            Arg::U64(status),
            ptr(&state.conv),
            ptr(&state.ids),
            ptr(ids),
            Arg::U32(u32_of("id history", c.max_ngram_size - 1)?),
        ];
        let width = conv_vec_width(c.kernel_size).filter(|_| {
            d % 8 == 0
                && [
                    hidden,
                    &*out,
                    &state.conv,
                    &layer.key_norm,
                    &layer.query_norm,
                    &layer.conv_norm,
                    &layer.conv_weight,
                ]
                .into_iter()
                .all(aligned16)
        });
        if let Some(width) = width {
            // Gate, value, convolution and SiLU in one launch, a block per sequence and branch.
            let mut args = vec![
                Arg::U64(s.proj),
                ptr(hidden),
                ptr(&layer.key_norm),
                ptr(&layer.query_norm),
                ptr(&layer.conv_norm),
                ptr(&layer.conv_weight),
                Arg::U64(seqs as u64),
                Arg::U32(u32_of("m", m)?),
                Arg::U32(u32_of("d", d)?),
                Arg::U32(u32_of("kernel", c.kernel_size)?),
                Arg::U32(u32_of("dilation", c.max_ngram_size)?),
                Arg::U32(u32::from(c.short_conv)),
            ];
            args.extend(history);
            args.extend([Arg::U64(s.alpha), ptr(out)]);
            return self.launch(
                &format!("gate_conv_decode_vec{width}_{t}"),
                (seqs * m).min(MAX_BLOCKS as usize) as u32,
                GATE_VEC_THREADS,
                0,
                &args,
            );
        }
        self.launch_gate(layer, seqs, hidden, &s, status)?;
        let mut args = Self::conv_args(layer, seqs, &s)?.to_vec();
        args.push(Arg::U32(u32::from(c.short_conv)));
        args.extend(history);
        args.push(ptr(out));
        self.launch_n(
            &format!("conv_decode_scaled_{t}"),
            (seqs * m * d) as u64,
            &args,
        )
    }
}

/// The oracle's error for the first bad window id a decode step of `seqs` sequences recorded
/// (`position << 32 | id`, the position flat over the step's ids then the id history, as
/// `record_bad_window_ids` in `kernels/common.cuh` documents).
pub(crate) fn decode_fault_in_word(word: u64, seqs: usize, vocab: u64) -> Error {
    Error::IdOutOfRange {
        position: (word >> 32) as usize % seqs.max(1),
        id: word & 0xffff_ffff,
        limit: vocab,
    }
}
