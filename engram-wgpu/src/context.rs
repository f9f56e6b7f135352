//! The one module that calls wgpu: adapter choice, device and queue, the pipeline cache, device
//! memory, transfers, dispatches and error capture. The rest of the crate sees [`Context`],
//! [`Memory`] and [`Bind`] only.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, PoisonError};

use engram_core::{DType, Error, Result};
use wgpu::util::DeviceExt;

use crate::shaders::{self, Access, Kernel, Variant};
use crate::BACKEND_NAME;

/// Environment variable: a substring of the adapter name to use (case-insensitive).
pub const ADAPTER_ENV: &str = "ENGRAM_WGPU_ADAPTER";
/// Environment variable: the graphics APIs to try, comma-separated (`vulkan`, `metal`, `dx12`).
pub const BACKENDS_ENV: &str = "ENGRAM_WGPU_BACKEND";

fn backend_err(message: impl Into<String>) -> Error {
    Error::Backend {
        backend: BACKEND_NAME,
        message: message.into(),
    }
}

fn no_device(reason: impl Into<String>) -> Error {
    Error::NoDevice {
        backend: BACKEND_NAME,
        reason: reason.into(),
    }
}

/// The limits of the device that the backend plans around.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeviceLimits {
    /// The largest storage binding, in bytes.
    pub max_binding: u64,
    /// The largest buffer, in bytes.
    pub max_buffer: u64,
    /// The alignment of a storage binding's offset, in bytes.
    pub binding_align: u64,
    /// Workgroups per grid dimension.
    pub max_groups: u32,
    /// Storage buffers one kernel may bind.
    pub max_storage_buffers: u32,
}

/// A block of device memory (usable as storage and as a copy source and destination).
pub(crate) struct Memory {
    buffer: wgpu::Buffer,
}

impl Memory {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.buffer.size()
    }
}

/// A byte range of a [`Memory`] bound to one binding of a dispatch.
pub(crate) struct Bind<'a> {
    /// The memory.
    pub memory: &'a Memory,
    /// First byte (a multiple of the binding alignment).
    pub offset: u64,
    /// Bytes (a non-zero multiple of 4).
    pub size: u64,
}

struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// An open device: the adapter's name, the device, its queue and the compiled kernels.
pub(crate) struct Context {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter_name: String,
    api: String,
    limits: DeviceLimits,
    /// The adapter features the kernels use.
    variant: Variant,
    pipelines: Mutex<HashMap<(Kernel, DType, Variant), Arc<Pipeline>>>,
    /// The first error the device reported outside an error scope (a failed dispatch or copy).
    error: Arc<Mutex<Option<String>>>,
}

fn rank(kind: wgpu::DeviceType) -> u32 {
    match kind {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl Context {
    /// Opens the best adapter (a discrete GPU before an integrated one before a CPU driver), or
    /// the first whose name contains `ENGRAM_WGPU_ADAPTER`; `ENGRAM_WGPU_BACKEND` restricts the
    /// graphics APIs tried.
    pub fn new() -> Result<Self> {
        let backends = match std::env::var(BACKENDS_ENV) {
            Ok(list) => wgpu::Backends::from_comma_list(&list),
            Err(_) => wgpu::Backends::all(),
        };
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        desc.flags = wgpu::InstanceFlags::empty().with_env();
        let instance = wgpu::Instance::new(desc);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
        if adapters.is_empty() {
            return Err(no_device(format!(
                "no adapter for {backends:?} (on Linux without a GPU, Mesa's lavapipe provides \
                 one: apt-get install mesa-vulkan-drivers libvulkan1)"
            )));
        }
        let adapter = match std::env::var(ADAPTER_ENV) {
            Ok(want) => {
                let want_lower = want.to_lowercase();
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                let at = names
                    .iter()
                    .position(|n| n.to_lowercase().contains(&want_lower))
                    .ok_or_else(|| {
                        no_device(format!(
                            "{ADAPTER_ENV}={want} matches none of the adapters {names:?}"
                        ))
                    })?;
                adapters.swap_remove(at)
            }
            Err(_) => {
                adapters.sort_by_key(|a| rank(a.get_info().device_type));
                adapters.swap_remove(0)
            }
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16);
        let variant = Variant {
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            native_f16: features.contains(wgpu::Features::SHADER_F16),
            shared_tiles: info.device_type != wgpu::DeviceType::Cpu,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("engram"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| no_device(format!("{}: {e}", info.name)))?;
        let error = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&error);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        Ok(Context {
            device,
            queue,
            adapter_name: info.name.clone(),
            api: format!("{:?}", info.backend),
            limits: DeviceLimits {
                max_binding: limits.max_storage_buffer_binding_size,
                max_buffer: limits.max_buffer_size,
                binding_align: u64::from(limits.min_storage_buffer_offset_alignment).max(4),
                max_groups: limits.max_compute_workgroups_per_dimension,
                max_storage_buffers: limits.max_storage_buffers_per_shader_stage,
            },
            variant,
            pipelines: Mutex::new(HashMap::new()),
            error,
        })
    }

    /// The adapter features the kernels use.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Uses the kernels of `variant`, less the adapter features the device lacks.
    pub fn set_variant(&mut self, variant: Variant) {
        let features = self.device.features();
        self.variant = Variant {
            subgroups: variant.subgroups && features.contains(wgpu::Features::SUBGROUP),
            native_f16: variant.native_f16 && features.contains(wgpu::Features::SHADER_F16),
            shared_tiles: variant.shared_tiles,
        };
        self.pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The adapter, as `name (API)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.adapter_name, self.api)
    }

    /// The limits the backend plans around.
    pub fn limits(&self) -> DeviceLimits {
        self.limits
    }

    /// Plans around buffers of at most `bytes` (never more than the adapter allows; at least
    /// 128 KiB), and bindings no larger.
    pub fn cap_buffer(&mut self, bytes: u64) {
        let align = self.limits.binding_align;
        let capped = (bytes / align * align).max(1 << 17);
        self.limits.max_buffer = self.limits.max_buffer.min(capped);
        self.limits.max_binding = self.limits.max_binding.min(self.limits.max_buffer);
    }

    /// Plans around storage bindings of at most `bytes` (never more than the adapter allows;
    /// rounded down to the binding alignment, at least one alignment unit).
    pub fn cap_binding(&mut self, bytes: u64) {
        let align = self.limits.binding_align;
        let capped = (bytes / align * align).max(align);
        self.limits.max_binding = self.limits.max_binding.min(capped);
    }

    /// Fails with the first error the device reported since the last check.
    fn check_errors(&self) -> Result<()> {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.take() {
            Some(message) => Err(backend_err(message)),
            None => Ok(()),
        }
    }

    /// New device memory of `bytes` bytes (a multiple of 4), zeroed.
    pub fn create(&self, bytes: u64) -> Result<Memory> {
        let size = bytes.max(4);
        if size > self.limits.max_buffer {
            return Err(backend_err(format!(
                "a buffer of {size} bytes exceeds the adapter's largest buffer ({} bytes)",
                self.limits.max_buffer
            )));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(backend_err(format!("allocating {size} bytes: {e}")));
        }
        Ok(Memory { buffer })
    }

    /// Writes `data` (a multiple of 4 bytes) at byte `offset` (a multiple of 4).
    pub fn write(&self, memory: &Memory, offset: u64, data: &[u8]) {
        if !data.is_empty() {
            self.queue.write_buffer(&memory.buffer, offset, data);
        }
    }

    /// Copies `size` bytes (offsets and size multiples of 4) between two blocks.
    pub fn copy(&self, src: &Memory, src_offset: u64, dst: &Memory, dst_offset: u64, size: u64) {
        if size == 0 {
            return;
        }
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(&src.buffer, src_offset, &dst.buffer, dst_offset, size);
        self.queue.submit([encoder.finish()]);
    }

    /// Reads `size` bytes (a multiple of 4) from byte `offset`, after all queued work.
    pub fn read(&self, memory: &Memory, offset: u64, size: u64) -> Result<Vec<u8>> {
        if size == 0 {
            self.sync()?;
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("engram readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(&memory.buffer, offset, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.sync()?;
        rx.recv()
            .map_err(|_| backend_err("the readback was dropped"))?
            .map_err(|e| backend_err(format!("mapping the readback: {e}")))?;
        let data = staging
            .get_mapped_range(..)
            .map_err(|e| backend_err(format!("reading the readback: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Waits for all queued work and reports any error it raised.
    pub fn sync(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| backend_err(format!("waiting for the device: {e}")))?;
        self.check_errors()
    }

    fn pipeline(&self, kernel: Kernel, dtype: DType) -> Result<Arc<Pipeline>> {
        let key = (
            kernel,
            if kernel.is_typed() { dtype } else { DType::U32 },
            self.variant,
        );
        let mut cache = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = cache.get(&key) {
            return Ok(Arc::clone(p));
        }
        let source = shaders::source_variant(kernel, dtype, self.variant).ok_or(
            Error::UnsupportedDType {
                backend: BACKEND_NAME,
                dtype,
            },
        )?;
        let entries: Vec<wgpu::BindGroupLayoutEntry> = std::iter::once((0, true))
            .chain(
                kernel
                    .bindings()
                    .iter()
                    .map(|b| (b.binding, b.access == Access::Read)),
            )
            .map(|(binding, read_only)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.name()),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.name()),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(kernel.name()),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.name()),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.name()),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(backend_err(format!(
                "compiling kernel {} for {dtype}: {e}",
                kernel.name()
            )));
        }
        let p = Arc::new(Pipeline { pipeline, layout });
        cache.insert(key, Arc::clone(&p));
        Ok(p)
    }

    /// Queues one dispatch of `kernel` (element type `dtype`) over `groups` workgroups with its
    /// parameters `params` (binding 0) and `binds` (bindings 1, 2, ...).
    pub fn dispatch(
        &self,
        kernel: Kernel,
        dtype: DType,
        params: &[u32],
        binds: &[Bind<'_>],
        groups: (u32, u32),
    ) -> Result<()> {
        if groups.0 == 0 || groups.1 == 0 {
            return Ok(());
        }
        let pipeline = self.pipeline(kernel, dtype)?;
        let param_words: Vec<u32> = if params.is_empty() {
            vec![0]
        } else {
            params.to_vec()
        };
        let param_buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("engram params"),
                contents: bytemuck::cast_slice(&param_words),
                usage: wgpu::BufferUsages::STORAGE,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: param_buffer.as_entire_binding(),
        }];
        for (i, b) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.memory.buffer,
                    offset: b.offset,
                    size: NonZeroU64::new(b.size),
                }),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name()),
            layout: &pipeline.layout,
            entries: &entries,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.name()),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        }
        self.queue.submit([encoder.finish()]);
        Ok(())
    }
}
