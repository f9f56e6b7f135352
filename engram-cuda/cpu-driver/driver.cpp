// A stand-in for the CUDA driver library (libcuda.so.1) that runs this project's kernels on the
// CPU: the entry points the engram-cuda crate calls (through cust), with device memory in host
// memory, every stream synchronous, graphs recorded at capture and replayed, and each kernel
// launch run by a scheduler of fibers. Built by build.sh with the kernel sources compiled as C++
// (cuda_lang.h); a test run with it in LD_LIBRARY_PATH exercises the backend's host code, launch
// contracts and kernels (the mma.sync projections and the sm_90a wgmma ones alike) without a
// GPU. It reports an sm_90 device (ENGRAM_CPU_DRIVER_SM=80, say, for another: the backend then
// keeps to the mma.sync kernels). It is a functional model, not a timing one; built with --asan (build.sh) it is a
// memory checker too, every device allocation exactly its size.
//
// Scheduling: a launch runs its blocks one after another on the calling host thread (in launch
// order, or last to first with ENGRAM_CPU_DRIVER_ORDER=reverse); each CUDA
// thread of a block is a fiber (its own stack; see Context below) that runs until it reaches __syncthreads, a warp-wide
// operation, a failed mbarrier wait or its end. A warp's operation completes when every live lane
// of the warp has reached it; __syncthreads when every live thread of the block has; a thread
// spinning on an mbarrier tries again each round. If a round ends with no thread having moved on
// (only failed waits, no mbarrier arrival) and no barrier can complete, the block has deadlocked
// (a barrier not all threads reach, a phase no one completes): the launch fails.
#include <ucontext.h>
#include <sys/mman.h>

#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_lang.h"

thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
thread_local unsigned char smem[EMU_SMEM_BYTES] __attribute__((aligned(1024)));

// ---- CUDA driver API types and codes (the values of cuda.h) --------------------------------------

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
enum : CUresult {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED = 900,
    CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

// ---- fibers --------------------------------------------------------------------------------------

namespace {

// A fiber's saved execution context. On x86-64 (without the address sanitizer) the switch is the
// few instructions below: the callee-saved registers and the floating-point control words pushed
// on the fiber's own stack, the stack pointer kept here. Elsewhere, and under the sanitizer
// (which must see each stack switch), ucontext, whose swapcontext also saves the signal mask:
// a system call at every barrier, which made half of a suite's run time.
#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#if defined(__x86_64__) && !defined(EMU_ASAN)
extern "C" void emu_switch_stack(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .type emu_switch_stack, @function
emu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch_stack, .-emu_switch_stack
)");

struct Context {
    void* sp = nullptr;
};

// A context that starts entry() on the given stack at its first switch.
void make_context(Context& c, void* stack, size_t bytes, void (*entry)()) {
    // From the top, 16-byte aligned: a null return address for entry (it never returns), entry
    // as the address emu_switch_stack returns to (so that entry starts with the stack aligned as
    // after a call), six zero registers, and the control words' defaults (MXCSR 0x1f80, x87 0x37f).
    auto* top = reinterpret_cast<unsigned long long*>(((uintptr_t)stack + bytes) & ~(uintptr_t)15);
    unsigned long long* sp = top - 2;
    sp[1] = 0;
    sp[0] = (unsigned long long)(uintptr_t)entry;
    for (int i = 0; i < 6; ++i) *--sp = 0;
    *--sp = 0x1f80ull | (0x37full << 32);
    c.sp = sp;
}
void switch_context(Context& from, Context& to) { emu_switch_stack(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};
void make_context(Context& c, void* stack, size_t bytes, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

enum class At { Running, Warp, Block, Spin, Done };

struct Fiber {
    Context ctx;
    At at = At::Running;
    dim3 tid;
    EmuAsync async;  // its copies and wgmmas in flight
};

constexpr size_t STACK_BYTES = 256 * 1024;

// The fiber stacks of this host thread, kept from launch to launch (mapped once each, unmapped
// when the thread ends).
struct Stacks {
    std::vector<void*> mapped;

    // At least n stacks; false if the memory cannot be mapped.
    bool reserve(size_t n) {
        while (mapped.size() < n) {
            void* s = mmap(nullptr, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                           -1, 0);
            if (s == MAP_FAILED) return false;
            mapped.push_back(s);
        }
        return true;
    }
    ~Stacks() {
        for (void* s : mapped) munmap(s, STACK_BYTES);
    }
};
thread_local Stacks stacks;

struct Block {
    std::vector<Fiber> fibers;
    std::vector<unsigned long long> lanes;  // per warp: 32 lanes x 8 words
    Context main;
    size_t current = 0;
    const std::function<void()>* body = nullptr;
    const char* failure = nullptr;
};

thread_local Block* running = nullptr;

Fiber& current_fiber() { return running->fibers[running->current]; }

void wait_at(At at) {
    Fiber& f = current_fiber();
    f.at = at;
    switch_context(f.ctx, running->main);
    threadIdx = current_fiber().tid;
}

void fiber_entry() {
    (*running->body)();
    Fiber& f = current_fiber();
    if (!f.async.wgmmas.empty()) emu_fail("a thread ended with wgmmas not waited for (wgmma.wait_group 0 missing)");
    // Copies still in flight land (nothing in the block can wait for them any more).
    emu_land_copies();
    f.at = At::Done;
    switch_context(f.ctx, running->main);
}

// Runs one block of the launch (blockIdx set by the caller); false with b.failure set on deadlock.
bool run_block(Block& b, const std::function<void()>& body) {
    const size_t n = b.fibers.size();
    b.body = &body;
    for (size_t i = 0; i < n; ++i) {
        Fiber& f = b.fibers[i];
        f.at = At::Running;
        f.async = EmuAsync{};
        make_context(f.ctx, stacks.mapped[i], STACK_BYTES, fiber_entry);
    }
    const size_t warps = (n + 31) / 32;
    for (;;) {
        // Whether any thread got further this round than a failed mbarrier wait.
        bool moved = false;
        const unsigned long long events = emu_mbarrier_events;
        for (size_t i = 0; i < n; ++i) {
            const At was = b.fibers[i].at;
            if (was != At::Running && was != At::Spin) continue;
            b.current = i;
            threadIdx = b.fibers[i].tid;
            b.fibers[i].at = At::Running;
            switch_context(b.main, b.fibers[i].ctx);
            if (b.failure) return false;
            moved |= was != At::Spin || b.fibers[i].at != At::Spin;
        }
        moved |= emu_mbarrier_events != events;
        bool released = false;
        for (size_t w = 0; w < warps; ++w) {
            size_t live = 0, waiting = 0;
            for (size_t i = w * 32; i < std::min(n, w * 32 + 32); ++i) {
                live += b.fibers[i].at != At::Done;
                waiting += b.fibers[i].at == At::Warp;
            }
            if (waiting > 0 && waiting == live) {
                for (size_t i = w * 32; i < std::min(n, w * 32 + 32); ++i)
                    if (b.fibers[i].at == At::Warp) b.fibers[i].at = At::Running;
                released = true;
            }
        }
        if (released) continue;
        size_t live = 0, waiting = 0;
        for (const Fiber& f : b.fibers) {
            live += f.at != At::Done;
            waiting += f.at == At::Block;
        }
        if (live == 0) return true;
        if (waiting == live) {
            for (Fiber& f : b.fibers) f.at = At::Running;
            continue;
        }
        if (moved) continue;
        b.failure = "deadlock: the block's threads wait at __syncthreads, at warp-wide operations their warps "
                    "cannot complete, or on mbarrier phases no thread will complete";
        return false;
    }
}

}  // namespace

void __syncthreads() { wait_at(At::Block); }
void emu_warp_sync() { wait_at(At::Warp); }
void emu_spin() { wait_at(At::Spin); }
EmuAsync& emu_async() { return current_fiber().async; }
thread_local unsigned long long emu_mbarrier_events = 0;
unsigned long long* emu_lanes() { return &running->lanes[(running->current / 32) * 32 * 8]; }
void emu_fail(const char* what) {
    std::fprintf(stderr, "engram cpu driver: %s (block %u,%u,%u thread %u,%u,%u)\n", what, blockIdx.x, blockIdx.y,
                 blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    std::abort();
}

// ---- kernels -------------------------------------------------------------------------------------

namespace {

using Bound = EmuBound;

// A kernel the driver can launch: what cuModuleGetFunction hands out, one per name for the
// library's lifetime (the map's nodes do not move).
struct Function {
    std::string name;
    EmuBinder bind;
};

std::map<std::string, Function>& registry() {
    static std::map<std::string, Function> r;
    return r;
}

CUresult run_grid(const Bound& kernel, dim3 grid, dim3 block, unsigned shared) {
    const size_t threads = (size_t)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || shared > EMU_SMEM_BYTES)
        return CUDA_ERROR_INVALID_VALUE;
    // A launch from inside a kernel would reuse the running block's stacks.
    if (running) return CUDA_ERROR_NOT_SUPPORTED;
    if (!stacks.reserve(threads)) return CUDA_ERROR_OUT_OF_MEMORY;
    Block b;
    b.fibers.resize(threads);
    b.lanes.assign(((threads + 31) / 32) * 32 * 8, 0);
    for (size_t i = 0; i < threads; ++i) {
        b.fibers[i].tid = dim3{(unsigned)(i % block.x), (unsigned)(i / block.x % block.y),
                               (unsigned)(i / ((size_t)block.x * block.y))};
    }
    running = &b;
    blockDim = block;
    gridDim = grid;
    // Blocks in launch order, or last to first with ENGRAM_CPU_DRIVER_ORDER=reverse: the
    // hardware promises no order, so a kernel's result must not depend on it.
    static const bool reverse = [] {
        const char* v = std::getenv("ENGRAM_CPU_DRIVER_ORDER");
        return v && std::string(v) == "reverse";
    }();
    const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
    bool ok = true;
    for (unsigned long long i = 0; i < blocks && ok; ++i) {
        const unsigned long long at = reverse ? blocks - 1 - i : i;
        blockIdx = dim3{(unsigned)(at % grid.x), (unsigned)(at / grid.x % grid.y),
                        (unsigned)(at / ((unsigned long long)grid.x * grid.y))};
        // Shared memory starts each block with what the last one left: poison it, as a kernel
        // must not read shared memory it has not written.
        std::memset(smem, 0xff, shared);
        ok = run_block(b, kernel);
    }
    running = nullptr;
    if (!ok) {
        std::fprintf(stderr, "engram cpu driver: launch failed: %s (block %u,%u,%u)\n", b.failure, blockIdx.x,
                     blockIdx.y, blockIdx.z);
        return CUDA_ERROR_LAUNCH_FAILED;
    }
    return CUDA_SUCCESS;
}

// ---- streams and graphs --------------------------------------------------------------------------

struct Graph {
    std::vector<std::function<CUresult()>> steps;
};

struct Stream {
    Graph* capture = nullptr;  // the graph being captured, if any
};

// Runs `step` now, or records it when `stream` is being captured.
CUresult on_stream(void* stream, std::function<CUresult()> step) {
    Stream* s = static_cast<Stream*>(stream);
    if (s && s->capture) {
        s->capture->steps.push_back(std::move(step));
        return CUDA_SUCCESS;
    }
    return step();
}

bool capturing(void* stream) { return stream && static_cast<Stream*>(stream)->capture; }

std::mutex allocations_lock;
std::map<CUdeviceptr, size_t>& allocations() {
    static std::map<CUdeviceptr, size_t> a;
    return a;
}

// The compute capability reported, as 10 major + minor: ENGRAM_CPU_DRIVER_SM, else 90 (the
// backend then loads the sm_90a module and may take the wgmma projections).
int sm() {
    const char* v = std::getenv("ENGRAM_CPU_DRIVER_SM");
    const int n = v ? std::atoi(v) : 0;
    return n >= 10 ? n : 90;
}

int attribute(int attrib) {
    switch (attrib) {
    case 1: return 1024;          // max threads per block
    case 2: return 1024;          // max block dim x
    case 3: return 1024;          // max block dim y
    case 4: return 64;            // max block dim z
    case 5: return 2147483647;    // max grid dim x
    case 6: return 65535;         // max grid dim y
    case 7: return 65535;         // max grid dim z
    case 8: return 49152;         // shared memory per block
    case 10: return 32;           // warp size
    case 16: {                    // multiprocessors: ENGRAM_CPU_DRIVER_SMS, else an H100's 132
        const char* v = std::getenv("ENGRAM_CPU_DRIVER_SMS");
        const int n = v ? std::atoi(v) : 0;
        return n > 0 ? n : 132;
    }
    case 75: return sm() / 10;    // compute capability major
    case 76: return sm() % 10;    // compute capability minor
    case 97: return (int)EMU_SMEM_BYTES;  // shared memory per block, opt-in
    default: return 0;
    }
}

}  // namespace

void emu_register(const char* name, EmuBinder bind) { registry()[name] = Function{name, std::move(bind)}; }

// ---- the driver API ------------------------------------------------------------------------------

extern "C" {

CUresult cuInit(unsigned) { return CUDA_SUCCESS; }

CUresult cuGetErrorString(CUresult e, const char** s) {
    switch (e) {
    case CUDA_SUCCESS: *s = "no error"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "invalid argument"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "out of memory"; break;
    case CUDA_ERROR_INVALID_DEVICE: *s = "invalid device ordinal"; break;
    case CUDA_ERROR_INVALID_HANDLE: *s = "invalid resource handle"; break;
    case CUDA_ERROR_NOT_FOUND: *s = "named symbol not found"; break;
    case CUDA_ERROR_LAUNCH_FAILED: *s = "unspecified launch failure"; break;
    case CUDA_ERROR_NOT_SUPPORTED: *s = "operation not supported"; break;
    case CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: *s = "operation not permitted when stream is capturing"; break;
    default: *s = "unknown error"; return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    if (len <= 0) return CUDA_ERROR_INVALID_VALUE;
    std::snprintf(name, (size_t)len, "engram CPU stand-in driver (no GPU; functional model of sm_%d)", sm());
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetAttribute(int* v, int attrib, CUdevice) {
    *v = attribute(attrib);
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice) {
    static int context;
    *ctx = &context;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice, unsigned) { return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(void*) { return CUDA_SUCCESS; }

// A loaded module: the kernels its PTX defines (every kernel of this library is compiled in,
// but a module hands out only its own, as the driver does: a name looked up in the wrong module
// is an error here too).
struct Module {
    std::set<std::string> entries;
};

CUresult cuModuleLoadDataEx(void** module, const void* image, unsigned, void*, void**) {
    if (!image) return CUDA_ERROR_INVALID_VALUE;
    auto* m = new Module;
    const std::string ptx(static_cast<const char*>(image));
    const std::string mark = ".entry ";
    for (size_t at = ptx.find(mark); at != std::string::npos; at = ptx.find(mark, at + 1)) {
        const size_t begin = at + mark.size(), end = ptx.find('(', begin);
        if (end != std::string::npos) m->entries.insert(ptx.substr(begin, end - begin));
    }
    *module = m;
    return CUDA_SUCCESS;
}
CUresult cuModuleUnload(void* module) {
    delete static_cast<Module*>(module);
    return CUDA_SUCCESS;
}
CUresult cuModuleGetFunction(void** f, void* module, const char* name) {
    if (!module) return CUDA_ERROR_INVALID_VALUE;
    if (!static_cast<Module*>(module)->entries.count(name)) return CUDA_ERROR_NOT_FOUND;
    auto it = registry().find(name);
    if (it == registry().end()) return CUDA_ERROR_NOT_FOUND;
    *f = &it->second;
    return CUDA_SUCCESS;
}
CUresult cuFuncSetAttribute(void*, int attrib, int value) {
    if (attrib == 8 && value > (int)EMU_SMEM_BYTES) return CUDA_ERROR_INVALID_VALUE;  // max dynamic shared memory
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void* stream, void** params, void** extra) {
    if (!f || extra) return CUDA_ERROR_INVALID_VALUE;
    const Function* fn = static_cast<Function*>(f);
    // The arguments are copied now, as the driver does: the caller's array may be gone at replay.
    Bound kernel = fn->bind(params);
    const dim3 grid{gx, gy, gz}, block{bx, by, bz};
    static const bool trace = std::getenv("ENGRAM_CPU_DRIVER_TRACE") != nullptr;
    if (trace)
        std::fprintf(stderr, "engram cpu driver: %s %s grid (%u, %u, %u) block (%u, %u, %u) shared %u\n",
                     capturing(stream) ? "capture" : "launch", fn->name.c_str(), gx, gy, gz, bx, by, bz, shared);
    return on_stream(stream, [kernel, grid, block, shared]() { return run_grid(kernel, grid, block, shared); });
}

// The tensor maps hopper.cu's tensor copies read (EmuTensorMap, cuda_lang.h), with the checks the
// driver makes on the parameters this project's maps use: a 2-D tensor of 16-bit elements (f16
// 6, bf16 9), 16-byte aligned, rows a multiple of 16 bytes apart, boxes of 1..256 elements a
// side, unit element strides, no interleave, no swizzle or the 128-byte one (3; a box row of at
// most 128 bytes then) and zero fill (0). Anything else is refused rather than guessed at.
CUresult cuTensorMapEncodeTiled(void* map, int dtype, unsigned rank, void* address, const unsigned long long* dims,
                                const unsigned long long* strides, const unsigned* box, const unsigned* element_strides,
                                int interleave, int swizzle, int, int oob_fill) {
    if (!map || rank != 2 || (dtype != 6 && dtype != 9) || !address || (std::uintptr_t)address % 16 || !dims ||
        !strides || !box || !element_strides)
        return CUDA_ERROR_INVALID_VALUE;
    const unsigned elem = 2;
    if (dims[0] == 0 || dims[1] == 0 || strides[0] % 16 || strides[0] < dims[0] * elem) return CUDA_ERROR_INVALID_VALUE;
    for (unsigned i = 0; i < 2; ++i)
        if (box[i] == 0 || box[i] > 256 || element_strides[i] != 1) return CUDA_ERROR_INVALID_VALUE;
    if (interleave != 0 || (swizzle != 0 && swizzle != 3) || oob_fill != 0) return CUDA_ERROR_INVALID_VALUE;
    if (box[0] * elem % 16 || (swizzle == 3 && box[0] * elem > 128)) return CUDA_ERROR_INVALID_VALUE;
    EmuTensorMap m{EMU_TENSOR_MAP_MAGIC, (unsigned long long)(std::uintptr_t)address, {dims[0], dims[1]}, strides[0],
                   {box[0], box[1]}, elem, swizzle == 3 ? 1u : 0u};
    std::memset(map, 0, 128);
    std::memcpy(map, &m, sizeof m);
    return CUDA_SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    // 256-byte aligned as the driver's are, but exactly `bytes` long, so that an address-sanitizer
    // build (build.sh --asan) reports any access past the end.
    void* m = nullptr;
    if (posix_memalign(&m, 256, std::max<size_t>(bytes, 1)) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    // Fresh device memory holds whatever was there: all ones (NaN as floats) shows a read of
    // memory no one wrote.
    std::memset(m, 0xff, bytes);
    *p = (CUdeviceptr)m;
    std::lock_guard<std::mutex> g(allocations_lock);
    allocations()[*p] = bytes;
    return CUDA_SUCCESS;
}
CUresult cuMemFree_v2(CUdeviceptr p) {
    {
        std::lock_guard<std::mutex> g(allocations_lock);
        if (allocations().erase(p) == 0) return CUDA_ERROR_INVALID_VALUE;
    }
    std::free((void*)p);
    return CUDA_SUCCESS;
}
// Page-locked host memory: ordinary memory here (the copies are memcpy either way).
CUresult cuMemAllocHost_v2(void** p, size_t bytes) {
    *p = std::malloc(std::max<size_t>(bytes, 1));
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
CUresult cuMemFreeHost(void* p) {
    std::free(p);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    std::memcpy((void*)dst, src, n);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    std::memcpy(dst, (const void*)src, n);
    return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void* stream) {
    return on_stream(stream, [dst, src, n]() {
        std::memmove((void*)dst, (const void*)src, n);
        return CUDA_SUCCESS;
    });
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    std::memset((void*)dst, v, n);
    return CUDA_SUCCESS;
}

CUresult cuStreamCreateWithPriority(void** stream, unsigned, int) {
    *stream = new Stream;
    return CUDA_SUCCESS;
}
CUresult cuStreamDestroy_v2(void* stream) {
    Stream* s = static_cast<Stream*>(stream);
    if (!s) return CUDA_ERROR_INVALID_HANDLE;
    delete s->capture;
    delete s;
    return CUDA_SUCCESS;
}
CUresult cuStreamSynchronize(void* stream) {
    return capturing(stream) ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED : CUDA_SUCCESS;
}
CUresult cuStreamBeginCapture_v2(void* stream, int) {
    Stream* s = static_cast<Stream*>(stream);
    if (!s || s->capture) return CUDA_ERROR_INVALID_VALUE;
    s->capture = new Graph;
    return CUDA_SUCCESS;
}
CUresult cuStreamEndCapture(void* stream, void** graph) {
    Stream* s = static_cast<Stream*>(stream);
    if (!s || !s->capture) return CUDA_ERROR_INVALID_VALUE;
    *graph = s->capture;
    s->capture = nullptr;
    return CUDA_SUCCESS;
}
CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
    if (!graph) return CUDA_ERROR_INVALID_VALUE;
    *exec = new Graph(*static_cast<Graph*>(graph));
    return CUDA_SUCCESS;
}
CUresult cuGraphLaunch(void* exec, void* stream) {
    if (!exec) return CUDA_ERROR_INVALID_VALUE;
    if (capturing(stream)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    for (auto& step : static_cast<Graph*>(exec)->steps)
        if (CUresult r = step()) return r;
    return CUDA_SUCCESS;
}
CUresult cuGraphDestroy(void* graph) {
    delete static_cast<Graph*>(graph);
    return CUDA_SUCCESS;
}
CUresult cuGraphExecDestroy(void* exec) {
    delete static_cast<Graph*>(exec);
    return CUDA_SUCCESS;
}

}  // extern "C"
