//! An embedder's view: another wgpu program dispatches one of our kernels on its own device from
//! the public WGSL source, entry point, bindings and workgroup size alone, and gets the oracle's
//! answer. Without an adapter the test reports SKIPPED.

#![allow(clippy::unwrap_used)] // a failing test is a panic with the reason

use engram_core::hash::hash_packed;
use engram_core::synthetic;
use engram_core::{DType, EngramConfig, NgramHasher};
use engram_wgpu::shaders::{self, Access, Kernel};
use wgpu::util::DeviceExt;

fn storage(device: &wgpu::Device, words: &[u32]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(words),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    })
}

#[test]
fn another_wgpu_program_dispatches_the_hash_kernel_with_compression_from_its_public_description() {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::all();
    let instance = wgpu::Instance::new(desc);
    let Some(adapter) = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .next()
    else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED wgpu embedding: no adapter");
        assert!(std::env::var_os(engram_wgpu::REQUIRE_ENV).is_none());
        return;
    };
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();

    // The inputs: a packed batch of three sequences, the demo configuration's first layer.
    let config = EngramConfig::demo();
    let vocab = 98_627u64;
    let pad = 2u32;
    let hasher = NgramHasher::new(&config, vocab, pad).unwrap();
    let layer = hasher.layer(config.layer_ids[0]).unwrap();
    let k = config.n_head_per_ngram;
    let ids = synthetic::ids(300, vocab, 4);
    let cu = [0u32, 7, 7, 300];
    let heads = (config.max_ngram_size - 1) * k;
    let mut expected = vec![0u32; ids.len() * heads];
    hash_packed(&[layer], k, pad, vocab, &ids, &cu, &mut [&mut expected]).unwrap();

    // The kernel, as its documentation describes it.
    let kernel = Kernel::HashRows;
    let source = shaders::source(kernel, DType::U32).unwrap();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
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
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: None,
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(kernel.name()),
        compilation_options: Default::default(),
        cache: None,
    });

    // Raw token ids and the lookup that compresses them: the kernel compresses on the fly.
    let raw_vocab = 2 * vocab as usize;
    let lookup: Vec<u32> = (0..raw_vocab).map(|r| (r as u64 % vocab) as u32).collect();
    let raw: Vec<u32> = ids.iter().map(|&c| c + vocab as u32 * (c % 2)).collect();
    assert!(raw.iter().zip(&ids).all(|(&r, &c)| lookup[r as usize] == c));

    // P = [tokens, seqs, n_max, k, pad, compress]; bindings: ids, cu, mult (low, high pairs),
    // sizes, rows, lookup.
    let params = [
        ids.len() as u32,
        (cu.len() - 1) as u32,
        config.max_ngram_size as u32,
        k as u32,
        pad,
        1,
    ];
    let mult: Vec<u32> = layer
        .multipliers
        .iter()
        .flat_map(|&m| [m as u32, (m >> 32) as u32])
        .collect();
    let buffers = [
        storage(&device, &params),
        storage(&device, &raw),
        storage(&device, &cu),
        storage(&device, &mult),
        storage(&device, &layer.table_sizes),
        storage(&device, &vec![0u32; expected.len()]),
        storage(&device, &lookup),
    ];
    let bind_entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &bind_entries,
    });
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (expected.len() * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        let per_group = kernel.workgroup_size().0 as usize;
        pass.dispatch_workgroups(ids.len().div_ceil(per_group) as u32, 1, 1);
    }
    encoder.copy_buffer_to_buffer(&buffers[5], 0, &readback, 0, (expected.len() * 4) as u64);
    queue.submit([encoder.finish()]);
    readback.map_async(wgpu::MapMode::Read, .., |r| r.unwrap());
    device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let got: Vec<u32> = bytemuck::cast_slice(&readback.get_mapped_range(..).unwrap()).to_vec();
    assert_eq!(got, expected);
}
