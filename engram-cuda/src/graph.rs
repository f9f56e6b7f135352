//! One decode step captured as a CUDA graph and replayed: the launches of the fast-path decode
//! (the projection, which hashes each window and records bad ids, then gate scales, value +
//! convolution and id history in one kernel), with the ids validated on the device, so that a
//! step needs no host synchronisation and costs one graph launch.

use std::ptr::null_mut;

use cust::memory::DeviceBuffer;
use cust::sys::{
    cuGraphDestroy, cuGraphExecDestroy, cuGraphInstantiateWithFlags, cuGraphLaunch,
    cuStreamBeginCapture_v2, cuStreamEndCapture, CUgraph, CUgraphExec, CUresult,
    CUstreamCaptureMode,
};
use engram_core::{
    check_decode, Backend, DeviceEngramLayer, DeviceEngramState, Element, Error, Result,
};

use crate::device::{cuda_err, CudaBackend, CudaBuffer};
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
    backend: &'a CudaBackend,
    layer: &'a DeviceEngramLayer<CudaBackend, T>,
    graph: CUgraph,
    exec: CUgraphExec,
    /// The first bad id seen (`position << 32 | id`), all ones while none.
    status: CudaBuffer<u64>,
    /// The graph's own scratch (never the backend's shared workspace, which may move).
    _scratch: DeviceBuffer<u8>,
    /// Device addresses and lengths of the captured buffers.
    key: Vec<(u64, usize)>,
    seqs: usize,
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
        let window = seqs * layer.config.max_ngram_size;
        if seqs == 0 || !self.fast_path_fits(layer, seqs) || window >= 1 << 32 {
            return Err(Error::Backend {
                backend: BACKEND_NAME,
                message: "this layer or batch is not served by the fast path a decode graph \
                          captures (16-bit elements, rows of whole 16-byte chunks)"
                    .into(),
            });
        }
        // Everything the launches read is on the device before the capture begins.
        self.hash_params(&layer.hash)?;
        let scratch = DeviceBuffer::<u8>::zeroed(self.decode_scratch_bytes(layer, seqs).max(256))
            .map_err(cuda_err)?;
        let status = self.upload(&[u64::MAX])?;
        self.synchronize()?;
        let stream = self.stream.as_inner();
        // SAFETY: the stream is the backend's own and idle (synchronised above); capture mode
        // thread-local keeps other threads' CUDA calls out of it.
        driver("begin capture", unsafe {
            cuStreamBeginCapture_v2(
                stream,
                CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
        })?;
        let enqueued = self.enqueue_decode(
            layer,
            ids,
            hidden,
            state,
            out,
            None,
            status.device_ptr(),
            scratch.as_device_ptr().as_raw(),
        );
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
        Ok(DecodeGraph {
            backend: self,
            layer,
            graph,
            exec,
            status,
            _scratch: scratch,
            key: key_of(ids, hidden, state, out),
            seqs,
        })
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
        if key_of(ids, hidden, state, out) != self.key {
            return Err(Error::Backend {
                backend: BACKEND_NAME,
                message: "a decode graph replays only on the buffers it was captured with".into(),
            });
        }
        // SAFETY: the executable graph is live; every buffer it addresses is alive and of the
        // captured length (checked above, and borrowed for the call), its scratch and status are
        // owned by `self`, and the layer is borrowed for the graph's lifetime.
        driver("graph launch", unsafe {
            cuGraphLaunch(self.exec, self.backend.stream.as_inner())
        })
    }

    /// Waits for the replays so far and reports the first bad id any of them met (then clears
    /// it, so that later replays run again).
    pub fn check(&mut self) -> Result<()> {
        let word = self.backend.to_vec(&self.status)?[0];
        if word == u64::MAX {
            return Ok(());
        }
        self.status.write(&[u64::MAX])?;
        Err(Error::IdOutOfRange {
            position: (word >> 32) as usize % self.seqs.max(1),
            id: word & 0xffff_ffff,
            limit: self.layer.compressed_vocab,
        })
    }
}

impl<T: Element> Drop for DecodeGraph<'_, T> {
    fn drop(&mut self) {
        // A replay may still run: finish it before its graph and scratch go.
        let _ = self.backend.synchronize();
        // SAFETY: both handles were created by `capture_decode` and are destroyed once, here.
        unsafe {
            cuGraphExecDestroy(self.exec);
            cuGraphDestroy(self.graph);
        }
    }
}
