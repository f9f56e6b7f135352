//! The backend proper: typed buffers over device memory and every op as dispatches of the WGSL
//! kernels. Inputs are validated exactly as the oracle validates them (same typed errors), before
//! any kernel writes.

use std::marker::PhantomData;
use std::mem::size_of;

use engram_core::hash::LayerHash;
use engram_core::reference::check;
use engram_core::{
    Backend, Capabilities, DType, Element, EngramOps, Error, MoeConfig, MoeOps, PackedBatch,
    Result, Scalar, ScoreFunc,
};

use crate::context::{Bind, Context, Memory};
use crate::shaders::{Grid, Kernel};
use crate::BACKEND_NAME;

use check::len as check_len;

fn backend_err(message: impl Into<String>) -> Error {
    Error::Backend {
        backend: BACKEND_NAME,
        message: message.into(),
    }
}

fn u32_of(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Overflow { what })
}

fn round4(bytes: u64) -> u64 {
    bytes.div_ceil(4) * 4
}

/// Bytes each segment of a buffer larger than the adapter's largest buffer repeats from the
/// next segment, so that every table row of at most this size lies whole inside one segment.
const SEGMENT_OVERLAP: u64 = 1 << 16;

/// A buffer in device memory: `len` elements of `T`, optionally between two guard zones.
///
/// The usable elements start at a byte offset that is a multiple of the adapter's binding
/// alignment, so they can be bound on their own; 16-bit elements are packed two per word. Data
/// larger than the adapter's largest buffer (an embedding table, say) is held in several
/// segments: segment `i` holds bytes `[i * segment, i * segment + segment + SEGMENT_OVERLAP)`.
/// Only the gather reads such a buffer (any other op answers that it exceeds the largest
/// binding).
pub struct WgpuBuffer<T> {
    /// One block, or the segments of an oversized buffer.
    segments: Vec<Memory>,
    /// Bytes each segment serves (all of the block when there is one).
    segment: u64,
    /// Byte offset of the first usable element (0 when segmented).
    start: u64,
    len: usize,
    fill: T,
    _t: PhantomData<T>,
}

impl<T: Scalar> WgpuBuffer<T> {
    fn data_bytes(&self) -> u64 {
        (self.len * size_of::<T>()) as u64
    }

    /// The bytes bound for the usable elements: at least 4, a multiple of 4.
    fn bound_bytes(&self) -> u64 {
        round4(self.data_bytes()).max(4)
    }

    /// The block of an unsegmented buffer.
    fn memory(&self) -> &Memory {
        &self.segments[0]
    }
}

/// The wgpu backend: one adapter's device and queue, and its compiled kernels.
pub struct WgpuBackend {
    ctx: Context,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend")
            .field("adapter", &self.ctx.describe())
            .finish()
    }
}

impl WgpuBackend {
    /// Opens the best adapter (or the one `ENGRAM_WGPU_ADAPTER` names, among the APIs
    /// `ENGRAM_WGPU_BACKEND` lists); [`Error::NoDevice`] when there is none.
    pub fn new() -> Result<Self> {
        Ok(WgpuBackend {
            ctx: Context::new()?,
        })
    }

    /// The same backend planning around storage bindings of at most `bytes` (rounded down to
    /// the adapter's binding alignment; the adapter's own limit still applies). Tables larger
    /// than this are gathered window by window; any other buffer larger than this is an error.
    /// For embedders sharing a device with other work, and for testing the windowed gather.
    pub fn with_binding_limit(mut self, bytes: u64) -> Self {
        self.ctx.cap_binding(bytes);
        self
    }

    /// The same backend planning around buffers of at most `bytes` (at least 128 KiB; the
    /// adapter's own limit still applies). Larger data is held in segments, which only the gather
    /// reads: that is how a table larger than the adapter's largest buffer is served. For
    /// embedders sharing a device, and for testing the segmented gather.
    pub fn with_buffer_limit(mut self, bytes: u64) -> Self {
        self.ctx.cap_buffer(bytes);
        self
    }

    /// The same backend running the kernels every WebGPU adapter runs, even where the adapter
    /// has subgroup operations or f16 storage (which it otherwise uses, see
    /// [`shaders::Variant`](crate::shaders::Variant)).
    pub fn portable(self) -> Self {
        self.with_variant(crate::shaders::Variant::default())
    }

    /// The same backend running the kernels of `variant`, less the adapter features this device
    /// lacks. By default the backend uses every feature the adapter has, and shared tiles on
    /// GPUs only.
    pub fn with_variant(mut self, variant: crate::shaders::Variant) -> Self {
        self.ctx.set_variant(variant);
        self
    }

    /// The optional adapter features the kernels use.
    pub fn variant(&self) -> crate::shaders::Variant {
        self.ctx.variant()
    }

    /// The largest storage binding the backend plans around, in bytes.
    pub fn binding_limit(&self) -> u64 {
        self.ctx.limits().max_binding
    }

    /// [`WgpuBackend::new`] for test suites: when the environment variable
    /// [`REQUIRE_ENV`](crate::REQUIRE_ENV) is set (CI sets it where an adapter must exist), no
    /// adapter is a panic with the reason instead of an error that marks the tests SKIPPED.
    pub fn for_tests() -> Result<Self> {
        match Self::new() {
            Err(e) if std::env::var_os(crate::REQUIRE_ENV).is_some() => {
                panic!(
                    "{} is set but the wgpu backend cannot open: {e}",
                    crate::REQUIRE_ENV
                )
            }
            other => other,
        }
    }

    /// The adapter in use, as `name (API)`.
    pub fn adapter(&self) -> String {
        self.ctx.describe()
    }

    /// Segments of `bytes` bytes of data when they exceed the largest buffer: the bytes each
    /// segment serves, or `None` when one block holds them.
    fn segmentation(&self, bytes: u64) -> Result<Option<u64>> {
        let limits = self.ctx.limits();
        if round4(bytes) <= limits.max_buffer {
            return Ok(None);
        }
        let segment = limits.max_buffer.saturating_sub(SEGMENT_OVERLAP) / limits.binding_align
            * limits.binding_align;
        if segment < SEGMENT_OVERLAP {
            return Err(backend_err(
                "the adapter's largest buffer is too small to segment",
            ));
        }
        Ok(Some(segment))
    }

    /// Memory for `bytes` bytes of unguarded data, written from `data` when given (zeros
    /// otherwise), in segments when larger than the adapter's largest buffer.
    fn alloc_plain<T: Scalar>(&self, len: usize, data: Option<&[u8]>) -> Result<WgpuBuffer<T>> {
        let bytes = (len * size_of::<T>()) as u64;
        let total = round4(bytes).max(4);
        let (segments, segment) = match self.segmentation(bytes)? {
            None => {
                let memory = self.ctx.create(total)?;
                if let Some(d) = data {
                    let mut padded = d.to_vec();
                    padded.resize(total as usize, 0);
                    self.ctx.write(&memory, 0, &padded);
                }
                (vec![memory], total)
            }
            Some(segment) => {
                let mut segments = Vec::new();
                let mut first = 0u64;
                while first < total {
                    let size = (total - first).min(segment + SEGMENT_OVERLAP);
                    let memory = self.ctx.create(size)?;
                    if let Some(d) = data {
                        let end = ((first + size) as usize).min(d.len());
                        let mut chunk = d[first as usize..end].to_vec();
                        chunk.resize(size as usize, 0);
                        self.ctx.write(&memory, 0, &chunk);
                    }
                    segments.push(memory);
                    first += segment;
                }
                (segments, segment)
            }
        };
        Ok(WgpuBuffer {
            segments,
            segment,
            start: 0,
            len,
            fill: T::default(),
            _t: PhantomData,
        })
    }

    fn alloc<T: Scalar>(&self, data: &[T], guard: usize, fill: T) -> Result<WgpuBuffer<T>> {
        if guard == 0 {
            return self.alloc_plain(data.len(), Some(bytemuck::cast_slice(data)));
        }
        let limits = self.ctx.limits();
        let size = size_of::<T>() as u64;
        let guard_bytes = guard as u64 * size;
        let start = guard_bytes.div_ceil(limits.binding_align) * limits.binding_align;
        let data_bytes = data.len() as u64 * size;
        let total = round4((start + data_bytes + guard_bytes).max(start + 4));
        let memory = self.ctx.create(total)?;
        let mut bytes: Vec<u8> = Vec::with_capacity(total as usize);
        let pattern = bytemuck::bytes_of(&fill);
        bytes.extend(pattern.iter().cycle().take(start as usize));
        bytes.extend_from_slice(bytemuck::cast_slice(data));
        let tail = total as usize - bytes.len();
        bytes.extend(pattern.iter().cycle().take(tail));
        self.ctx.write(&memory, 0, &bytes);
        Ok(WgpuBuffer {
            segments: vec![memory],
            segment: total,
            start,
            len: data.len(),
            fill,
            _t: PhantomData,
        })
    }

    /// The binding of a whole buffer's usable elements.
    fn bind<'a, T: Scalar>(&self, b: &'a WgpuBuffer<T>) -> Result<Bind<'a>> {
        let size = b.bound_bytes();
        let max = self.ctx.limits().max_binding;
        if size > max {
            return Err(backend_err(format!(
                "a buffer of {size} bytes exceeds the adapter's largest storage binding ({max} \
                 bytes); split the batch"
            )));
        }
        Ok(Bind {
            memory: b.memory(),
            offset: b.start,
            size,
        })
    }

    /// A small u32 buffer for kernel parameters that do not fit `P` (multipliers, table sizes).
    fn words(&self, data: &[u32]) -> Result<WgpuBuffer<u32>> {
        self.alloc(data, 0, 0)
    }

    /// Workgroups for `items` work items of `kernel`, as a 2-D grid.
    fn groups(&self, kernel: Kernel, items: usize) -> Result<(u32, u32)> {
        let per = match kernel.grid() {
            Grid::PerItem => {
                let (x, y, z) = kernel.workgroup_size();
                (x * y * z) as usize
            }
            Grid::PerGroup | Grid::Tiles64 => 1,
        };
        let groups = items.div_ceil(per) as u64;
        let max = u64::from(self.ctx.limits().max_groups);
        let x = groups.min(max);
        let y = groups.div_ceil(x.max(1));
        if y > max {
            return Err(backend_err(format!(
                "{items} work items of {} exceed the adapter's dispatch limit",
                kernel.name()
            )));
        }
        Ok((x as u32, y as u32))
    }

    fn run(
        &self,
        kernel: Kernel,
        dtype: DType,
        items: usize,
        params: &[u32],
        binds: &[Bind<'_>],
    ) -> Result<()> {
        if items == 0 {
            return Ok(());
        }
        let groups = self.groups(kernel, items)?;
        self.ctx.dispatch(kernel, dtype, params, binds, groups)
    }

    fn read_u32(&self, b: &WgpuBuffer<u32>) -> Result<Vec<u32>> {
        self.to_vec(b)
    }

    /// The first index `i` with `v[i] >= limit`, if any (a device-side scan).
    fn first_at_or_above(&self, v: &WgpuBuffer<u32>, limit: u64) -> Result<Option<usize>> {
        let Ok(limit) = u32::try_from(limit) else {
            return Ok(None);
        };
        if v.len == 0 {
            return Ok(None);
        }
        let first = self.words(&[u32::MAX])?;
        self.run(
            Kernel::FirstGe,
            DType::U32,
            v.len,
            &[u32_of("ids", v.len)?, limit],
            &[self.bind(v)?, self.bind(&first)?],
        )?;
        let found = self.read_u32(&first)?[0];
        Ok((found != u32::MAX).then_some(found as usize))
    }

    fn check_ids(&self, ids: &WgpuBuffer<u32>, limit: u64) -> Result<()> {
        if let Some(position) = self.first_at_or_above(ids, limit)? {
            let id = self.read_u32(ids)?[position];
            return Err(Error::IdOutOfRange {
                position,
                id: u64::from(id),
                limit,
            });
        }
        Ok(())
    }

    fn hash_params(&self, layer: &LayerHash) -> Result<(WgpuBuffer<u32>, WgpuBuffer<u32>)> {
        let mult: Vec<u32> = layer
            .multipliers
            .iter()
            .flat_map(|&m| [m as u32, (m >> 32) as u32])
            .collect();
        Ok((self.words(&mult)?, self.words(&layer.table_sizes)?))
    }

    fn linear_raw<T: Element>(
        &self,
        x: &WgpuBuffer<T>,
        w: &WgpuBuffer<T>,
        bias: Option<&WgpuBuffer<T>>,
        in_features: usize,
        out: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let (rows, out_features) =
            check::linear(x.len, w.len, bias.map(|b| b.len), in_features, out.len)?;
        if rows == 0 || out_features == 0 {
            return Ok(());
        }
        let max = u64::from(self.ctx.limits().max_groups);
        let grid = (out_features.div_ceil(64) as u64, rows.div_ceil(64) as u64);
        if grid.0 > max || grid.1 > max {
            return Err(backend_err(format!(
                "a {rows} x {out_features} projection exceeds the adapter's dispatch limit"
            )));
        }
        let bias_bind = self.bind(bias.unwrap_or(w))?;
        // Rows of a multiple of 4 elements are read four at a time.
        let (kernel, k_param) = if in_features % 4 == 0 {
            let tiled = self.ctx.variant().shared_tiles;
            let kernel = if tiled {
                Kernel::LinearVec4Tiled
            } else {
                Kernel::LinearVec4
            };
            (kernel, in_features / 4)
        } else {
            (Kernel::Linear, in_features)
        };
        self.ctx.dispatch(
            kernel,
            T::DTYPE,
            &[
                u32_of("linear rows", rows)?,
                u32_of("in", k_param)?,
                u32_of("out", out_features)?,
                u32::from(bias.is_some()),
            ],
            &[self.bind(x)?, self.bind(w)?, bias_bind, self.bind(out)?],
            (grid.0 as u32, grid.1 as u32),
        )
    }

    fn silu_mul<T: Element>(
        &self,
        a: &WgpuBuffer<T>,
        b: &WgpuBuffer<T>,
        h: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        self.run(
            Kernel::SiluMul,
            T::DTYPE,
            a.len,
            &[u32_of("elements", a.len)?],
            &[self.bind(a)?, self.bind(b)?, self.bind(h)?],
        )
    }

    /// The slots (token, choice) of `indices` grouped by expert: `offsets` (`[E + 1]`, each
    /// expert's run padded to a multiple of 64) and `order` (slot numbers, `u32::MAX` in the
    /// padding), built on the device by a count, a scan and a scatter.
    fn group_by_expert(
        &self,
        indices: &WgpuBuffer<u32>,
        experts: usize,
    ) -> Result<(WgpuBuffer<u32>, WgpuBuffer<u32>)> {
        let slots = indices.len;
        let counts = self.zeros::<u32>(experts)?;
        let offsets = self.zeros::<u32>(experts + 1)?;
        let cursor = self.zeros::<u32>(experts)?;
        let padded = slots + experts * 63;
        let order = self.alloc(&vec![u32::MAX; padded], 0, 0)?;
        let p = [u32_of("slots", slots)?];
        self.run(
            Kernel::ExpertCount,
            DType::U32,
            slots,
            &p,
            &[self.bind(indices)?, self.bind(&counts)?],
        )?;
        self.run(
            Kernel::ExpertOffsets,
            DType::U32,
            1,
            &[u32_of("experts", experts)?],
            &[self.bind(&counts)?, self.bind(&offsets)?],
        )?;
        self.run(
            Kernel::ExpertScatter,
            DType::U32,
            slots,
            &p,
            &[
                self.bind(indices)?,
                self.bind(&offsets)?,
                self.bind(&cursor)?,
                self.bind(&order)?,
            ],
        )?;
        Ok((offsets, order))
    }

    /// `y[s] = x_row(s) . w[expert(s)]^T` for every slot, over the slots grouped by expert.
    #[allow(clippy::too_many_arguments)]
    fn grouped_linear<T: Element>(
        &self,
        x: &WgpuBuffer<T>,
        w: &WgpuBuffer<T>,
        grouping: &(WgpuBuffer<u32>, WgpuBuffer<u32>),
        experts: usize,
        k: usize,
        inputs: usize,
        outputs: usize,
        per_slot: bool,
        y: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let (offsets, order) = grouping;
        if order.len == 0 || outputs == 0 {
            return Ok(());
        }
        let max = u64::from(self.ctx.limits().max_groups);
        let grid = (outputs.div_ceil(64) as u64, order.len.div_ceil(64) as u64);
        if grid.0 > max || grid.1 > max {
            return Err(backend_err(
                "the routed experts exceed the adapter's dispatch limit",
            ));
        }
        self.ctx.dispatch(
            Kernel::GroupedLinear,
            T::DTYPE,
            &[
                u32_of("k", k)?,
                u32_of("in", inputs)?,
                u32_of("out", outputs)?,
                u32::from(per_slot),
                u32_of("experts", experts)?,
            ],
            &[
                self.bind(x)?,
                self.bind(w)?,
                self.bind(order)?,
                self.bind(offsets)?,
                self.bind(y)?,
            ],
            (grid.0 as u32, grid.1 as u32),
        )
    }
}

impl Backend for WgpuBackend {
    type Buffer<T: Scalar> = WgpuBuffer<T>;

    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: BACKEND_NAME,
            device: self.ctx.describe(),
            float_dtypes: crate::shaders::FLOAT_DTYPES.to_vec(),
        }
    }

    fn upload<T: Scalar>(&self, data: &[T]) -> Result<WgpuBuffer<T>> {
        self.alloc(data, 0, T::default())
    }

    fn zeros<T: Scalar>(&self, len: usize) -> Result<WgpuBuffer<T>> {
        // Device memory starts zeroed (WebGPU guarantees it).
        self.alloc_plain(len, None)
    }

    fn guarded<T: Scalar>(&self, len: usize, guard: usize, fill: T) -> Result<WgpuBuffer<T>> {
        self.alloc(&vec![fill; len], guard.max(1), fill)
    }

    fn guards_intact<T: Scalar>(&self, buffer: &WgpuBuffer<T>) -> Result<bool> {
        if buffer.start == 0 {
            // Not guarded (guarded buffers always start past their front guard).
            return Ok(true);
        }
        let all = self.ctx.read(buffer.memory(), 0, buffer.memory().size())?;
        let size = size_of::<T>();
        let fill = bytemuck::bytes_of(&buffer.fill);
        let (lo, hi) = (
            buffer.start as usize,
            buffer.start as usize + buffer.len * size,
        );
        Ok(all[..lo]
            .chunks_exact(size)
            .chain(all[hi..].chunks_exact(size))
            .all(|v| v == fill))
    }

    fn download<T: Scalar>(&self, buffer: &WgpuBuffer<T>, out: &mut [T]) -> Result<()> {
        check_len("download destination", out.len(), buffer.len)?;
        let dst: &mut [u8] = bytemuck::cast_slice_mut(out);
        let total = round4(buffer.data_bytes());
        for (i, memory) in buffer.segments.iter().enumerate() {
            let first = i as u64 * buffer.segment;
            let size = (total - first).min(buffer.segment);
            let bytes = self.ctx.read(memory, buffer.start, size)?;
            let end = (first as usize + bytes.len()).min(dst.len());
            dst[first as usize..end].copy_from_slice(&bytes[..end - first as usize]);
        }
        Ok(())
    }

    fn copy<T: Scalar>(&self, src: &WgpuBuffer<T>, dst: &mut WgpuBuffer<T>) -> Result<()> {
        check_len("copy destination", dst.len, src.len)?;
        if src.len == 0 {
            return Ok(());
        }
        if src.segments.len() > 1 {
            // Equal lengths, so equal segmentation (never guarded).
            for (s, d) in src.segments.iter().zip(&dst.segments) {
                self.ctx.copy(s, 0, d, 0, s.size());
            }
            return Ok(());
        }
        if src.data_bytes() % 4 == 0 {
            self.ctx.copy(
                src.memory(),
                src.start,
                dst.memory(),
                dst.start,
                src.data_bytes(),
            );
            return Ok(());
        }
        // 16-bit data ending in half a word: copy element by element so the other half (a guard
        // element, or padding) is left alone.
        self.run(
            Kernel::Copy,
            T::DTYPE,
            src.len,
            &[u32_of("elements", src.len)?],
            &[self.bind(src)?, self.bind(dst)?],
        )
    }

    fn len<T: Scalar>(&self, buffer: &WgpuBuffer<T>) -> usize {
        buffer.len
    }

    fn synchronize(&self) -> Result<()> {
        self.ctx.sync()
    }
}

impl EngramOps for WgpuBackend {
    fn compress_ids(
        &self,
        lookup: &WgpuBuffer<u32>,
        raw: &WgpuBuffer<u32>,
        out: &mut WgpuBuffer<u32>,
    ) -> Result<()> {
        check::compress_ids(raw.len, out.len)?;
        self.check_ids(raw, lookup.len as u64)?;
        self.run(
            Kernel::CompressIds,
            DType::U32,
            raw.len,
            &[u32_of("ids", raw.len)?],
            &[self.bind(lookup)?, self.bind(raw)?, self.bind(out)?],
        )
    }

    fn hash(
        &self,
        layer: &LayerHash,
        heads_per_order: usize,
        compressed_pad_id: u32,
        compressed_vocab: u64,
        ids: &WgpuBuffer<u32>,
        cu_seqlens: &WgpuBuffer<u32>,
        rows: &mut WgpuBuffer<u32>,
    ) -> Result<()> {
        let cu = self.read_u32(cu_seqlens)?;
        let batch = PackedBatch::new(&cu, ids.len)?;
        self.check_ids(ids, compressed_vocab)?;
        let n_max = layer.multipliers.len();
        let heads = (n_max - 1) * heads_per_order;
        check_len("hash output", rows.len, ids.len * heads)?;
        if ids.len == 0 {
            return Ok(());
        }
        let (mult, sizes) = self.hash_params(layer)?;
        self.run(
            Kernel::HashRows,
            DType::U32,
            ids.len,
            &[
                u32_of("tokens", ids.len)?,
                u32_of("sequences", batch.num_sequences())?,
                u32_of("max_ngram_size", n_max)?,
                u32_of("heads", heads_per_order)?,
                compressed_pad_id,
                0, // canonical ids already: `lookup` is not read
            ],
            &[
                self.bind(ids)?,
                self.bind(cu_seqlens)?,
                self.bind(&mult)?,
                self.bind(&sizes)?,
                self.bind(rows)?,
                self.bind(ids)?,
            ],
        )
    }

    fn hash_decode(
        &self,
        layer: &LayerHash,
        heads_per_order: usize,
        compressed_vocab: u64,
        history: &WgpuBuffer<u32>,
        ids: &WgpuBuffer<u32>,
        rows: &mut WgpuBuffer<u32>,
    ) -> Result<()> {
        let seqs = check::hash_decode(layer, heads_per_order, history.len, ids.len, rows.len)?;
        self.check_ids(ids, compressed_vocab)?;
        if let Some(p) = self.first_at_or_above(history, compressed_vocab)? {
            let id = self.read_u32(history)?[p];
            return Err(Error::IdOutOfRange {
                position: (seqs + p) % seqs.max(1),
                id: u64::from(id),
                limit: compressed_vocab,
            });
        }
        if seqs == 0 {
            return Ok(());
        }
        let (mult, sizes) = self.hash_params(layer)?;
        self.run(
            Kernel::HashDecode,
            DType::U32,
            seqs,
            &[
                u32_of("sequences", seqs)?,
                u32_of("max_ngram_size", layer.multipliers.len())?,
                u32_of("heads", heads_per_order)?,
            ],
            &[
                self.bind(history)?,
                self.bind(ids)?,
                self.bind(&mult)?,
                self.bind(&sizes)?,
                self.bind(rows)?,
            ],
        )
    }

    fn gather_rows<T: Element>(
        &self,
        table: &WgpuBuffer<T>,
        d_head: usize,
        layer: &LayerHash,
        rows: &WgpuBuffer<u32>,
        out: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        check::gather_rows(table.len, d_head, layer, rows.len, out.len)?;
        if rows.len == 0 {
            return Ok(());
        }
        u32_of("table elements (the wgpu gather indexes in u32)", table.len)?;
        let heads = layer.table_sizes.len();
        let sizes = self.words(&layer.table_sizes)?;
        let first = self.words(&[u32::MAX])?;
        self.run(
            Kernel::FirstRowBeyond,
            DType::U32,
            rows.len,
            &[u32_of("rows", rows.len)?, u32_of("heads", heads)?],
            &[self.bind(rows)?, self.bind(&sizes)?, self.bind(&first)?],
        )?;
        let bad = self.read_u32(&first)?[0];
        if bad != u32::MAX {
            let i = bad as usize;
            return Err(check::row_out_of_range(
                i,
                self.read_u32(rows)?[i],
                &layer.table_sizes,
            ));
        }
        // Offsets fit u32 because the whole table's elements do.
        let offsets: Vec<u32> = layer.offsets.iter().map(|&o| o as u32).collect();
        let offsets = self.words(&offsets)?;
        // A table larger than one storage binding is read through windows: each serves the rows
        // that start in its `stride` bytes and binds `stride` plus at least a row, so every row
        // it serves lies inside it. Windows never cross segments (a segment repeats the first
        // SEGMENT_OVERLAP bytes of the next, so rows starting in it end in it too).
        let limits = self.ctx.limits();
        let size = size_of::<T>() as u64;
        let table_bytes = round4(table.data_bytes());
        let row_bytes = d_head as u64 * size;
        if table.segments.len() > 1 && row_bytes > SEGMENT_OVERLAP {
            return Err(backend_err(format!(
                "rows of {row_bytes} bytes in a table split into segments (at most \
                 {SEGMENT_OVERLAP})"
            )));
        }
        let stride = if table_bytes <= limits.max_binding {
            table_bytes
        } else {
            let usable = limits.max_binding.saturating_sub(row_bytes + 4);
            let stride = usable / limits.binding_align * limits.binding_align;
            if stride == 0 {
                return Err(backend_err(
                    "a table row exceeds the largest storage binding",
                ));
            }
            stride
        };
        for (i, memory) in table.segments.iter().enumerate() {
            let base = i as u64 * table.segment;
            let serves = (table_bytes - base).min(table.segment);
            let mut first = 0u64;
            while first < serves {
                let bind_bytes =
                    (memory.size() - table.start - first).min(limits.max_binding) / 4 * 4;
                let win_start = (base + first) / size;
                let win_end = (base + (first + stride).min(serves)) / size;
                self.run(
                    Kernel::Gather,
                    T::DTYPE,
                    rows.len * d_head,
                    &[
                        u32_of("d_head", d_head)?,
                        u32_of("heads", heads)?,
                        u32_of("rows", rows.len)?,
                        u32_of("window start", win_start as usize)?,
                        u32_of("window end", win_end as usize)?,
                    ],
                    &[
                        Bind {
                            memory,
                            offset: table.start + first,
                            size: bind_bytes,
                        },
                        self.bind(&offsets)?,
                        self.bind(rows)?,
                        self.bind(out)?,
                    ],
                )?;
                first += stride;
            }
        }
        Ok(())
    }

    fn rms_norm<T: Element>(
        &self,
        x: &WgpuBuffer<T>,
        weight: &WgpuBuffer<T>,
        d: usize,
        eps: f64,
        out: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let vectors = check::rms_norm(x.len, weight.len, d, out.len)?;
        self.run(
            Kernel::RmsNorm,
            T::DTYPE,
            vectors,
            &[
                u32_of("vectors", vectors)?,
                u32_of("d", d)?,
                u32_of("groups", weight.len / d.max(1))?,
                (eps as f32).to_bits(),
            ],
            &[self.bind(x)?, self.bind(weight)?, self.bind(out)?],
        )
    }

    fn linear<T: Element>(
        &self,
        x: &WgpuBuffer<T>,
        weight: &WgpuBuffer<T>,
        bias: Option<&WgpuBuffer<T>>,
        in_features: usize,
        out: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        self.linear_raw(x, weight, bias, in_features, out)
    }

    fn gate<T: Element>(
        &self,
        proj: &WgpuBuffer<T>,
        hidden: &WgpuBuffer<T>,
        key_norm: &WgpuBuffer<T>,
        query_norm: &WgpuBuffer<T>,
        m: usize,
        d: usize,
        value: &mut WgpuBuffer<T>,
        alpha: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let tokens = check::gate(
            proj.len,
            hidden.len,
            key_norm.len,
            query_norm.len,
            m,
            d,
            value.len,
            alpha.len,
        )?;
        self.run(
            Kernel::Gate,
            T::DTYPE,
            tokens * m,
            &[u32_of("tokens", tokens)?, u32_of("m", m)?, u32_of("d", d)?],
            &[
                self.bind(proj)?,
                self.bind(hidden)?,
                self.bind(key_norm)?,
                self.bind(query_norm)?,
                self.bind(value)?,
                self.bind(alpha)?,
            ],
        )
    }

    fn gate_norm<T: Element>(
        &self,
        proj: &WgpuBuffer<T>,
        hidden: &WgpuBuffer<T>,
        key_norm: &WgpuBuffer<T>,
        query_norm: &WgpuBuffer<T>,
        conv_norm: &WgpuBuffer<T>,
        m: usize,
        d: usize,
        value: &mut WgpuBuffer<T>,
        alpha: &mut WgpuBuffer<T>,
        normed: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let tokens = check::gate(
            proj.len,
            hidden.len,
            key_norm.len,
            query_norm.len,
            m,
            d,
            value.len,
            alpha.len,
        )?;
        check::gate_norm(value.len, conv_norm.len, m, d, normed.len)?;
        if self.ctx.limits().max_storage_buffers <= Kernel::GateNorm.bindings().len() as u32 {
            // The fused kernel binds 9 storage buffers; WebGPU only promises 8.
            self.gate(proj, hidden, key_norm, query_norm, m, d, value, alpha)?;
            return self.rms_norm(
                value,
                conv_norm,
                d,
                engram_core::reference::CONV_NORM_EPS,
                normed,
            );
        }
        self.run(
            Kernel::GateNorm,
            T::DTYPE,
            tokens * m,
            &[
                u32_of("tokens", tokens)?,
                u32_of("m", m)?,
                u32_of("d", d)?,
                (engram_core::reference::CONV_NORM_EPS as f32).to_bits(),
            ],
            &[
                self.bind(proj)?,
                self.bind(hidden)?,
                self.bind(key_norm)?,
                self.bind(query_norm)?,
                self.bind(conv_norm)?,
                self.bind(value)?,
                self.bind(alpha)?,
                self.bind(normed)?,
            ],
        )
    }

    fn short_conv<T: Element>(
        &self,
        normed: &WgpuBuffer<T>,
        value: &WgpuBuffer<T>,
        weight: &WgpuBuffer<T>,
        channels: usize,
        kernel: usize,
        dilation: usize,
        cu_seqlens: &WgpuBuffer<u32>,
        out: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let tokens =
            check::short_conv(normed.len, value.len, weight.len, channels, kernel, out.len)?;
        let cu = self.read_u32(cu_seqlens)?;
        let batch = PackedBatch::new(&cu, tokens)?;
        self.run(
            Kernel::ShortConv,
            T::DTYPE,
            normed.len,
            &[
                u32_of("tokens", tokens)?,
                u32_of("channels", channels)?,
                u32_of("kernel", kernel)?,
                u32_of("dilation", dilation)?,
                u32_of("sequences", batch.num_sequences())?,
            ],
            &[
                self.bind(normed)?,
                self.bind(value)?,
                self.bind(weight)?,
                self.bind(cu_seqlens)?,
                self.bind(out)?,
            ],
        )
    }

    fn short_conv_decode<T: Element>(
        &self,
        normed: &WgpuBuffer<T>,
        value: &WgpuBuffer<T>,
        weight: &WgpuBuffer<T>,
        channels: usize,
        kernel: usize,
        dilation: usize,
        history: &mut WgpuBuffer<T>,
        out: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let seqs = check::short_conv_decode(
            normed.len,
            value.len,
            weight.len,
            channels,
            kernel,
            dilation,
            history.len,
            out.len,
        )?;
        self.run(
            Kernel::ShortConvDecode,
            T::DTYPE,
            normed.len,
            &[
                u32_of("sequences", seqs)?,
                u32_of("channels", channels)?,
                u32_of("kernel", kernel)?,
                u32_of("dilation", dilation)?,
            ],
            &[
                self.bind(normed)?,
                self.bind(value)?,
                self.bind(weight)?,
                self.bind(history)?,
                self.bind(out)?,
            ],
        )
    }

    fn capture_state<T: Element>(
        &self,
        ids: &WgpuBuffer<u32>,
        cu_seqlens: &WgpuBuffer<u32>,
        normed: &WgpuBuffer<T>,
        keep: usize,
        hist: usize,
        channels: usize,
        pad: u32,
        state_ids: &mut WgpuBuffer<u32>,
        state_conv: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let cu = self.read_u32(cu_seqlens)?;
        let batch = PackedBatch::new(&cu, ids.len)?;
        let seqs = batch.num_sequences();
        check::capture_state(
            ids.len,
            seqs,
            normed.len,
            keep,
            hist,
            channels,
            state_ids.len,
            state_conv.len,
        )?;
        self.run(
            Kernel::CaptureIds,
            DType::U32,
            seqs * keep,
            &[u32_of("sequences", seqs)?, u32_of("keep", keep)?, pad],
            &[
                self.bind(ids)?,
                self.bind(cu_seqlens)?,
                self.bind(state_ids)?,
            ],
        )?;
        self.run(
            Kernel::CaptureConv,
            T::DTYPE,
            seqs * hist * channels,
            &[
                u32_of("sequences", seqs)?,
                u32_of("hist", hist)?,
                u32_of("channels", channels)?,
            ],
            &[
                self.bind(normed)?,
                self.bind(cu_seqlens)?,
                self.bind(state_conv)?,
            ],
        )
    }

    fn push_ids(
        &self,
        history: &mut WgpuBuffer<u32>,
        ids: &WgpuBuffer<u32>,
        keep: usize,
    ) -> Result<()> {
        check::push_ids(history.len, ids.len, keep)?;
        self.run(
            Kernel::PushIds,
            DType::U32,
            ids.len,
            &[u32_of("sequences", ids.len)?, u32_of("keep", keep)?],
            &[self.bind(history)?, self.bind(ids)?],
        )
    }
}

impl MoeOps for WgpuBackend {
    fn moe_scores<T: Element>(
        &self,
        x: &WgpuBuffer<T>,
        gate_weight: &WgpuBuffer<T>,
        dim: usize,
        score_func: ScoreFunc,
        scores: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let mut logits = self.zeros::<T>(scores.len)?;
        self.linear_raw(x, gate_weight, None, dim, &mut logits)?;
        let experts = gate_weight.len / dim.max(1);
        let tokens = scores.len.checked_div(experts).unwrap_or(0);
        self.run(
            Kernel::ScoresAct,
            T::DTYPE,
            tokens,
            &[
                u32_of("tokens", tokens)?,
                u32_of("experts", experts)?,
                u32::from(score_func == ScoreFunc::Softmax),
            ],
            &[self.bind(&logits)?, self.bind(scores)?],
        )
    }

    fn moe_route<T: Element>(
        &self,
        scores: &WgpuBuffer<T>,
        bias: &WgpuBuffer<T>,
        config: &MoeConfig,
        weights: &mut WgpuBuffer<T>,
        indices: &mut WgpuBuffer<u32>,
    ) -> Result<()> {
        let tokens = check::moe_route(scores.len, bias.len, config, weights.len, indices.len)?;
        let (e, k) = (config.n_routed_experts, config.n_activated_experts);
        if e > 1024 || config.n_expert_groups > 32 {
            return Err(backend_err(
                "routing supports at most 1024 experts in at most 32 groups",
            ));
        }
        let has_bias = bias.len != 0;
        let bias_bind = if has_bias {
            self.bind(bias)?
        } else {
            self.bind(scores)?
        };
        self.run(
            Kernel::Route,
            T::DTYPE,
            tokens,
            &[
                u32_of("tokens", tokens)?,
                e as u32,
                config.n_expert_groups as u32,
                config.n_limited_groups as u32,
                k as u32,
                u32::from(config.score_func == ScoreFunc::Sigmoid),
                (config.route_scale as f32).to_bits(),
                u32::from(has_bias),
            ],
            &[
                self.bind(scores)?,
                bias_bind,
                self.bind(weights)?,
                self.bind(indices)?,
            ],
        )
    }

    fn expert_ffn<T: Element>(
        &self,
        x: &WgpuBuffer<T>,
        w1: &WgpuBuffer<T>,
        w2: &WgpuBuffer<T>,
        w3: &WgpuBuffer<T>,
        dim: usize,
        out: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let (rows, inter) = check::expert_ffn(x.len, w1.len, w2.len, w3.len, dim)?;
        check_len("expert output", out.len, rows * dim)?;
        let mut a = self.zeros::<T>(rows * inter)?;
        let mut b = self.zeros::<T>(rows * inter)?;
        self.linear_raw(x, w1, None, dim, &mut a)?;
        self.linear_raw(x, w3, None, dim, &mut b)?;
        let mut h = self.zeros::<T>(rows * inter)?;
        self.silu_mul(&a, &b, &mut h)?;
        self.linear_raw(&h, w2, None, inter, out)
    }

    fn routed_experts<T: Element>(
        &self,
        x: &WgpuBuffer<T>,
        w1: &WgpuBuffer<T>,
        w2: &WgpuBuffer<T>,
        w3: &WgpuBuffer<T>,
        indices: &WgpuBuffer<u32>,
        dim: usize,
        inter: usize,
        out: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let (tokens, k, experts) = check::routed_experts(
            x.len,
            w1.len,
            w2.len,
            w3.len,
            indices.len,
            dim,
            inter,
            out.len,
        )?;
        self.check_ids(indices, experts as u64)?;
        if tokens * k == 0 {
            return Ok(());
        }
        // Tokens grouped by expert once; the three projections then read each expert's weights
        // once per tile of 64 of its slots.
        let grouping = self.group_by_expert(indices, experts)?;
        let mut a = self.zeros::<T>(tokens * k * inter)?;
        let mut b = self.zeros::<T>(tokens * k * inter)?;
        self.grouped_linear(x, w1, &grouping, experts, k, dim, inter, false, &mut a)?;
        self.grouped_linear(x, w3, &grouping, experts, k, dim, inter, false, &mut b)?;
        let mut h = self.zeros::<T>(tokens * k * inter)?;
        self.silu_mul(&a, &b, &mut h)?;
        self.grouped_linear(&h, w2, &grouping, experts, k, inter, dim, true, out)
    }

    fn moe_combine<T: Element>(
        &self,
        expert_out: &WgpuBuffer<T>,
        weights: &WgpuBuffer<T>,
        shared: &WgpuBuffer<T>,
        dim: usize,
        out: &mut WgpuBuffer<T>,
    ) -> Result<()> {
        let (tokens, k) =
            check::moe_combine(expert_out.len, weights.len, shared.len, dim, out.len)?;
        let has_shared = shared.len != 0;
        let shared_bind = if has_shared {
            self.bind(shared)?
        } else {
            self.bind(expert_out)?
        };
        self.run(
            Kernel::Combine,
            T::DTYPE,
            tokens * dim,
            &[
                u32_of("tokens", tokens)?,
                u32_of("k", k)?,
                u32_of("dim", dim)?,
                u32::from(has_shared),
            ],
            &[
                self.bind(expert_out)?,
                self.bind(weights)?,
                shared_bind,
                self.bind(out)?,
            ],
        )
    }
}
