//! A decode step or a prefill captured as a CUDA graph and replayed: the launches of the
//! fast path, with the input validated on the device into the graph's own status word, so that a
//! replay needs no host synchronisation and costs one graph launch. A decode step: the
//! projection, which hashes each window and records bad ids, then gate scales, value +
//! convolution and id history in one kernel. A prefill: the batch's check (`cu_seqlens` and ids),
//! hash, projection, gate, value + convolution, and the decode state it leaves.

use std::ptr::null_mut;

use cust::memory::DeviceBuffer;
use cust::sys::{
    cuGraphDestroy, cuGraphExecDestroy, cuGraphInstantiateWithFlags, cuGraphLaunch,
    cuStreamBeginCapture_v2, cuStreamEndCapture, CUgraph, CUgraphExec, CUresult,
    CUstreamCaptureMode,
};
use engram_core::{
    check_decode, check_prefill, Backend, DeviceEngramLayer, DeviceEngramState, Element, Error,
    Result,
};

use crate::device::{batch_fault_in_word, cuda_err, CudaBackend, CudaBuffer};
use crate::fused::decode_fault_in_word;
use crate::BACKEND_NAME;

fn driver(what: &str, status: CUresult) -> Result<()> {
    if status == CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::Backend {
            backend: BACKEND_NAME,
            message: format!("{what}: {status:?}"),
        })
    }
}

/// A decode step captured once and replayed with [`DecodeGraph::replay`].
///
/// The graph reads and writes the buffers it was captured with; each replay is given them again
/// and checks that they are the same ones (same device addresses and lengths), so that the
/// caller keeps ownership and may [`CudaBuffer::write`] the next step's ids and hidden states
/// between replays. Bad ids are found on the device: the step that meets one writes nothing
/// (output, gates and state stay as they were), every later step is skipped too, and
/// [`DecodeGraph::check`] reports the first one as the oracle does ([`Error::IdOutOfRange`]).
///
/// ```no_run
/// use engram_core::{bf16, Backend, DeviceEngramLayer, DeviceEngramState, EngramLayer};
/// use engram_cuda::CudaBackend;
///
/// fn serve(layer: &EngramLayer<bf16>, steps: &[(Vec<u32>, Vec<bf16>)]) -> engram_core::Result<()> {
///     let cuda = CudaBackend::new()?;
///     let dev = DeviceEngramLayer::upload(&cuda, layer)?;
///     let (seqs, width) = (steps[0].0.len(), steps[0].1.len());
///     // A state primed by a prefill in practice; fresh here.
///     let mut state = DeviceEngramState::new(&cuda, &dev, seqs)?;
///     let mut ids = cuda.zeros::<u32>(seqs)?;
///     let mut hidden = cuda.zeros::<bf16>(width)?;
///     let mut out = cuda.zeros::<bf16>(width)?;
///     let mut graph = cuda.capture_decode(&dev, &ids, &hidden, &mut state, &mut out)?;
///     for (step_ids, step_hidden) in steps {
///         ids.write(step_ids)?;
///         hidden.write(step_hidden)?;
///         graph.replay(&ids, &hidden, &mut state, &mut out)?;
///         // ... read `out` (or keep replaying) ...
///     }
///     graph.check() // the first bad id any step met, if one did
/// }
/// ```
pub struct DecodeGraph<'a, T: Element> {
    graph: Captured<'a>,
    layer: &'a DeviceEngramLayer<CudaBackend, T>,
    seqs: usize,
}

/// A captured graph with what its launches address besides the caller's buffers: shared by
/// [`DecodeGraph`] and [`PrefillGraph`].
struct Captured<'a> {
    backend: &'a CudaBackend,
    graph: CUgraph,
    exec: CUgraphExec,
    /// The first failure a replay found, all ones while none.
    status: CudaBuffer<u64>,
    /// The graph's own scratch (never the backend's shared workspace, which may move).
    _scratch: DeviceBuffer<u8>,
    /// Device addresses and lengths of the captured buffers.
    key: Vec<(u64, usize)>,
}

impl<'a> Captured<'a> {
    /// Captures what `enqueue(status, scratch)` launches on the backend's stream, with a fresh
    /// status word and `scratch_bytes` of scratch of the graph's own; `key` names the caller's
    /// buffers the launches address. Everything the launches read must be on the device already.
    fn capture(
        backend: &'a CudaBackend,
        scratch_bytes: usize,
        key: Vec<(u64, usize)>,
        enqueue: impl FnOnce(u64, u64) -> Result<()>,
    ) -> Result<Self> {
        let scratch = DeviceBuffer::<u8>::zeroed(scratch_bytes.max(256)).map_err(cuda_err)?;
        let status = backend.upload(&[u64::MAX])?;
        backend.synchronize()?;
        let stream = backend.stream.as_inner();
        // SAFETY: the stream is the backend's own and idle (synchronised above); capture mode
        // thread-local keeps other threads' CUDA calls out of it.
        driver("begin capture", unsafe {
            cuStreamBeginCapture_v2(
                stream,
                CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        })?;
        let enqueued = enqueue(status.device_ptr(), scratch.as_device_ptr().as_raw());
        let mut graph: CUgraph = null_mut();
        // SAFETY: ends the capture begun above on the same stream, whatever the launches did;
        // `graph` receives the captured graph (or stays null on failure).
        let ended = driver("end capture", unsafe {
            cuStreamEndCapture(stream, &mut graph)
        });
        if let Err(e) = enqueued.and(ended) {
            if !graph.is_null() {
                // SAFETY: a graph the failed capture still produced is destroyed once, here.
                unsafe { cuGraphDestroy(graph) };
            }
            return Err(e);
        }
        let mut exec: CUgraphExec = null_mut();
        // SAFETY: `graph` is the live graph just captured; `exec` receives its executable form.
        let instantiated = driver("instantiate", unsafe {
            cuGraphInstantiateWithFlags(&mut exec, graph, 0)
        });
        if let Err(e) = instantiated {
            // SAFETY: the graph was created above and is destroyed once, here.
            unsafe { cuGraphDestroy(graph) };
            return Err(e);
        }
        Ok(Captured {
            backend,
            graph,
            exec,
            status,
            _scratch: scratch,
            key,
        })
    }

    /// Enqueues one replay, given the caller's buffers' `key` (they must be the captured ones).
    fn replay(&mut self, key: Vec<(u64, usize)>, what: &str) -> Result<()> {
        if key != self.key {
            return Err(Error::Backend {
                backend: BACKEND_NAME,
                message: format!("a {what} graph replays only on the buffers it was captured with"),
            });
        }
        // SAFETY: the executable graph is live; every buffer it addresses is alive and of the
        // captured length (checked above, and borrowed by the caller for the call), its scratch
        // and status are owned by `self`, and the layer is borrowed for the graph's lifetime.
        driver("graph launch", unsafe {
            cuGraphLaunch(self.exec, self.backend.stream.as_inner())
        })
    }

    /// Waits for the replays so far and takes the failure one of them recorded, if any (the
    /// word is all ones again afterwards, so that later replays run again).
    fn take_failure(&mut self) -> Result<Option<u64>> {
        let word = self.backend.to_vec(&self.status)?[0];
        if word == u64::MAX {
            return Ok(None);
        }
        self.status.write(&[u64::MAX])?;
        Ok(Some(word))
    }
}

impl Drop for Captured<'_> {
    fn drop(&mut self) {
        // A replay may still run: finish it before its graph and scratch go.
        let _ = self.backend.synchronize();
        // SAFETY: both handles were created by `Captured::capture` and are destroyed once, here.
        unsafe {
            cuGraphExecDestroy(self.exec);
            cuGraphDestroy(self.graph);
        }
    }
}

fn key_of<T: Element>(
    ids: &CudaBuffer<u32>,
    hidden: &CudaBuffer<T>,
    state: &DeviceEngramState<CudaBackend, T>,
    out: &CudaBuffer<T>,
) -> Vec<(u64, usize)> {
    vec![
        (ids.device_ptr(), ids.len),
        (hidden.device_ptr(), hidden.len),
        (state.ids.device_ptr(), state.ids.len),
        (state.conv.device_ptr(), state.conv.len),
        (out.device_ptr(), out.len),
    ]
}

impl CudaBackend {
    /// Captures one decode step of `layer` (16-bit elements, on the fast path) for the
    /// sequences of `state`, reading `ids` and `hidden` and writing `out` and the state. Shapes
    /// are checked as [`engram_core::EngramOps::engram_decode`] checks them; a layer the fast
    /// path does not serve is an error. Nothing runs until the first replay.
    pub fn capture_decode<'a, T: Element>(
        &'a self,
        layer: &'a DeviceEngramLayer<Self, T>,
        ids: &CudaBuffer<u32>,
        hidden: &CudaBuffer<T>,
        state: &mut DeviceEngramState<Self, T>,
        out: &mut CudaBuffer<T>,
    ) -> Result<DecodeGraph<'a, T>> {
        let seqs = check_decode(self, layer, ids, hidden, state, out, None)?;
        if seqs == 0 || !self.fast_path_fits(layer, seqs) {
            return Err(Error::Backend {
                backend: BACKEND_NAME,
                message: "this layer or batch is not served by the fast path a decode graph \
                          captures (16-bit elements, rows of whole 16-byte chunks)"
                    .into(),
            });
        }
        // Everything the launches read is on the device before the capture begins.
        self.hash_params(&layer.hash)?;
        let graph = Captured::capture(
            self,
            self.decode_scratch_bytes(layer, seqs),
            key_of(ids, hidden, state, out),
            |status, scratch| {
                self.enqueue_decode(layer, ids, hidden, state, out, None, status, scratch)
            },
        )?;
        Ok(DecodeGraph { graph, layer, seqs })
    }
}

impl<T: Element> DecodeGraph<'_, T> {
    /// Enqueues one decode step on the backend's stream (no host synchronisation); the buffers
    /// must be the ones the graph was captured with.
    pub fn replay(
        &mut self,
        ids: &CudaBuffer<u32>,
        hidden: &CudaBuffer<T>,
        state: &mut DeviceEngramState<CudaBackend, T>,
        out: &mut CudaBuffer<T>,
    ) -> Result<()> {
        self.graph.replay(key_of(ids, hidden, state, out), "decode")
    }

    /// Waits for the replays so far and reports the first bad id any of them met (then clears
    /// it, so that later replays run again).
    pub fn check(&mut self) -> Result<()> {
        match self.graph.take_failure()? {
            None => Ok(()),
            Some(word) => Err(decode_fault_in_word(
                word,
                self.seqs,
                self.layer.compressed_vocab,
            )),
        }
    }
}

/// A prefill captured once and replayed with [`PrefillGraph::replay`]: for serving loops that
/// run prefills of a fixed number of tokens and sequences (new ids, lengths and hidden states
/// written into the same buffers between replays), as runtimes that capture every batch size
/// do.
///
/// As with [`DecodeGraph`], each replay is given the captured buffers again and checks that
/// they are the same ones. `cu_seqlens` and the ids are checked on the device: a replay whose
/// batch is bad writes nothing (output and state stay as they were), every later replay is
/// skipped too, and [`PrefillGraph::check`] reports the first fault as the oracle does
/// ([`Error::InvalidSeqLens`] before [`Error::IdOutOfRange`]), from the status word alone, so
/// the inputs may have been rewritten since.
///
/// ```no_run
/// use engram_core::{bf16, Backend, DeviceEngramLayer, DeviceEngramState, EngramLayer};
/// use engram_cuda::CudaBackend;
///
/// // Batches of `seqs` sequences and `tokens` tokens in all, each with its `cu_seqlens`.
/// fn serve(
///     layer: &EngramLayer<bf16>,
///     batches: &[(Vec<u32>, Vec<u32>, Vec<bf16>)],
/// ) -> engram_core::Result<()> {
///     let cuda = CudaBackend::new()?;
///     let dev = DeviceEngramLayer::upload(&cuda, layer)?;
///     let (tokens, seqs, width) = (batches[0].0.len(), batches[0].1.len() - 1, batches[0].2.len());
///     let mut ids = cuda.zeros::<u32>(tokens)?;
///     let mut cu_seqlens = cuda.zeros::<u32>(seqs + 1)?;
///     let mut hidden = cuda.zeros::<bf16>(width)?;
///     let mut out = cuda.zeros::<bf16>(width)?;
///     let mut state = DeviceEngramState::new(&cuda, &dev, seqs)?;
///     // Capturing launches nothing, so the buffers' contents do not matter yet.
///     let mut graph =
///         cuda.capture_prefill(&dev, &ids, &cu_seqlens, &hidden, &mut out, Some(&mut state))?;
///     for (batch_ids, batch_cu, batch_hidden) in batches {
///         ids.write(batch_ids)?;
///         cu_seqlens.write(batch_cu)?;
///         hidden.write(batch_hidden)?;
///         graph.replay(&ids, &cu_seqlens, &hidden, &mut out, Some(&mut state))?;
///         graph.check()?; // waits; a bad batch is reported here
///         // ... read `out`, decode from `state` ...
///     }
///     Ok(())
/// }
/// ```
pub struct PrefillGraph<'a, T: Element> {
    graph: Captured<'a>,
    layer: &'a DeviceEngramLayer<CudaBackend, T>,
}

fn prefill_key_of<T: Element>(
    ids: &CudaBuffer<u32>,
    cu_seqlens: &CudaBuffer<u32>,
    hidden: &CudaBuffer<T>,
    out: &CudaBuffer<T>,
    state: Option<&DeviceEngramState<CudaBackend, T>>,
) -> Vec<(u64, usize)> {
    let mut key = vec![
        (ids.device_ptr(), ids.len),
        (cu_seqlens.device_ptr(), cu_seqlens.len),
        (hidden.device_ptr(), hidden.len),
        (out.device_ptr(), out.len),
    ];
    // No state is its own key (no buffer has address 0), so a graph captured with one does not
    // replay without it or the other way round.
    key.extend(match state {
        Some(state) => [
            (state.ids.device_ptr(), state.ids.len),
            (state.conv.device_ptr(), state.conv.len),
        ],
        None => [(0, 0); 2],
    });
    key
}

impl CudaBackend {
    /// Captures one prefill of `layer` (16-bit elements, on the fast path) over the batch
    /// `ids` / `cu_seqlens`, reading `hidden` and writing `out` and, when given, the decode
    /// `state` it leaves. Shapes are checked as [`engram_core::EngramOps::engram_prefill`]
    /// checks them (the contents of `ids` and `cu_seqlens` on each replay, on the device); a
    /// layer or batch the fast path does not serve is an error. Nothing runs until the first
    /// replay.
    pub fn capture_prefill<'a, T: Element>(
        &'a self,
        layer: &'a DeviceEngramLayer<Self, T>,
        ids: &CudaBuffer<u32>,
        cu_seqlens: &CudaBuffer<u32>,
        hidden: &CudaBuffer<T>,
        out: &mut CudaBuffer<T>,
        state: Option<&mut DeviceEngramState<Self, T>>,
    ) -> Result<PrefillGraph<'a, T>> {
        let (tokens, _) = check_prefill(
            self,
            layer,
            ids,
            cu_seqlens,
            hidden,
            out,
            None,
            state.as_deref(),
        )?;
        // The fast path keeps to below 2^31 ids, where the status word holds a bad id's position
        // and value.
        if tokens == 0 || !self.fast_path_fits(layer, tokens) {
            return Err(Error::Backend {
                backend: BACKEND_NAME,
                message: "this layer or batch is not served by the fast path a prefill graph \
                          captures (16-bit elements, rows of whole 16-byte chunks, at least one \
                          token)"
                    .into(),
            });
        }
        // Everything the launches read is on the device before the capture begins.
        self.hash_params(&layer.hash)?;
        let key = prefill_key_of(ids, cu_seqlens, hidden, out, state.as_deref());
        let graph = Captured::capture(
            self,
            self.prefill_scratch_bytes(layer, hidden, tokens),
            key,
            |status, scratch| {
                let vocab = layer.compressed_vocab;
                self.launch_batch_check(ids, cu_seqlens, tokens, vocab, status)?;
                self.enqueue_prefill(
                    layer, ids, cu_seqlens, hidden, out, None, state, status, scratch,
                )
            },
        )?;
        Ok(PrefillGraph { graph, layer })
    }
}

impl<T: Element> PrefillGraph<'_, T> {
    /// Enqueues one prefill on the backend's stream (no host synchronisation); the buffers must
    /// be the ones the graph was captured with (`state` given exactly when it was).
    pub fn replay(
        &mut self,
        ids: &CudaBuffer<u32>,
        cu_seqlens: &CudaBuffer<u32>,
        hidden: &CudaBuffer<T>,
        out: &mut CudaBuffer<T>,
        state: Option<&mut DeviceEngramState<CudaBackend, T>>,
    ) -> Result<()> {
        let key = prefill_key_of(ids, cu_seqlens, hidden, out, state.as_deref());
        self.graph.replay(key, "prefill")
    }

    /// Waits for the replays so far and reports the first fault of the first bad batch any of
    /// them met (then clears it, so that later replays run again).
    pub fn check(&mut self) -> Result<()> {
        let Some(word) = self.graph.take_failure()? else {
            return Ok(());
        };
        // Below 2^31 ids (the fast path keeps to that) the word holds the whole fault.
        let tokens = self.graph.key[0].1;
        match batch_fault_in_word(word, tokens, self.layer.compressed_vocab)? {
            Ok(error) => Err(error),
            Err(position) => Err(Error::Backend {
                backend: BACKEND_NAME,
                message: format!("a prefill graph's status word lacks the id at {position}"),
            }),
        }
    }
}
