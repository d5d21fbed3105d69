// A TVM runtime device plugin that runs the WGSL kernels of TVM's webgpu codegen natively, through
// wgpu-native (the library inside the `wgpu` Python wheel) on its Vulkan backend.
//
// It registers what the runtime looks up for device type kDLWebGPU:
//   device_api.webgpu                    alloc/free/copy/sync on wgpu buffers
//   ffi.Module.load_from_bytes.webgpu    the library's WGSL module -> one packed function per kernel
// and mlcgen.wgpu.* helpers (adapter facts, memory heaps, counters, per-kernel GPU time) for the
// Python side.
//
// The kernel calling convention is TVM's (tvm/web/src/webgpu.ts): buffer arguments are bindings
// 0..n-1 of group 0 (read-only unless the paramWriteAccess tag says otherwise), the POD arguments
// and packGridDimX follow as 32-bit words in one uniform buffer at binding n, and a grid wider than
// 65535 is folded into blockIdx.z. Unlike the JavaScript runtime we bind the uniform with a dynamic
// offset into one arena per submission, so a kernel's bind group depends only on its buffers and is
// cached: decode replays the same kernels on the same buffers every token.
#include <dlfcn.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/reflection/registry.h>
#include <tvm/runtime/device_api.h>
#include <webgpu.h>
#include <wgpu.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace mlcgen {
namespace wgpu_plugin {

using tvm::runtime::DeviceAPI;
using tvm::runtime::DeviceAttrKind;
namespace ffi = tvm::ffi;

constexpr uint32_t kMaxGridDim = 65535;     // WebGPU's default maxComputeWorkgroupsPerDimension
constexpr size_t kUniformSlot = 256;        // minUniformBufferOffsetAlignment on every adapter we met
constexpr size_t kArenaSlots = 4096;        // dispatches per submission before a forced flush
// After the host has waited for the GPU (a read-back), the first dispatches go out in a submission
// of kFirstBatch and each later one doubles: the GPU starts on a decode step while the host is
// still recording it, instead of idling until the read-back at its end submits all of it.
constexpr size_t kFirstBatch = 16;
constexpr size_t kArenaBytes = kArenaSlots * kUniformSlot;
constexpr size_t kQueries = 4096;           // WebGPU's maximum query set size

std::string View(WGPUStringView s) {
  if (!s.data) return "";
  return s.length == WGPU_STRLEN ? std::string(s.data) : std::string(s.data, s.length);
}
WGPUStringView View(const std::string& s) { return WGPUStringView{s.data(), s.size()}; }

// What wgpu's request-adapter and request-device callbacks deliver: the handle (null on failure),
// the message, and whether the callback has run.
template <typename Handle, typename Status, Status kSuccess>
struct Requested {
  Handle handle = nullptr;
  std::string message;
  bool done = false;
  static void Callback(Status status, Handle handle, WGPUStringView message, void* self, void*) {
    auto* r = static_cast<Requested*>(self);
    if (status == kSuccess) r->handle = handle;
    r->message = View(message);
    r->done = true;
  }
};

// ---------------------------------------------------------------------------------------------
// The one adapter/device/queue of the process, and the command batch being recorded.
class Context {
 public:
  static Context* Global() {
    static Context* inst = new Context();  // never destroyed: kernels may outlive Python's exit
    return inst;
  }

  WGPUDevice device = nullptr;
  WGPUQueue queue = nullptr;
  WGPULimits limits = {};
  std::string adapter_name, backend, adapter_type;
  bool has_f16 = false, has_subgroups = false, has_timestamps = false;
  bool bounds_checks = false;  // MLCGEN_WGPU_BOUNDS_CHECKS=1 compiles shaders with them (debugging)
  size_t allocated_bytes = 0, peak_bytes = 0;
  uint64_t dispatches = 0, submissions = 0;
  uint64_t wide_load_views = 0;  // extra bindings made by Kernel::WideLoads, over all kernels built
  uint64_t wait_ns = 0;  // host time blocked on the GPU (read-backs, syncs)

  bool Ready() { Init(); return device != nullptr; }
  const std::string& InitError() { Init(); return init_error_; }

  void Require() {
    if (!Ready()) TVM_FFI_THROW(RuntimeError) << "mlcgen wgpu plugin: " << init_error_;
  }

  void CheckError(const char* what) {
    if (!pending_error_.empty()) {
      std::string e;
      std::swap(e, pending_error_);
      TVM_FFI_THROW(RuntimeError) << "wgpu: " << what << ": " << e;
    }
  }

  // --- buffers ---
  WGPUBuffer Alloc(size_t nbytes) {
    Require();
    // whole 16-byte vectors: copies move whole words, and wide-load views see whole vec4<u32>s
    size_t size = std::max<size_t>(16, (nbytes + 15) / 16 * 16);
    if (size > limits.maxBufferSize) {
      TVM_FFI_THROW(RuntimeError) << "wgpu: a buffer of " << size << " bytes exceeds the adapter's maxBufferSize ("
                                  << limits.maxBufferSize << ") on " << adapter_name;
    }
    WGPUBufferDescriptor desc = {};
    desc.usage = WGPUBufferUsage_Storage | WGPUBufferUsage_CopySrc | WGPUBufferUsage_CopyDst;
    desc.size = size;
    WGPUBuffer buf = wgpuDeviceCreateBuffer(device, &desc);
    CheckError("allocating a buffer");
    if (!buf) TVM_FFI_THROW(RuntimeError) << "wgpu: out of device memory allocating " << size << " bytes";
    sizes_[buf] = size;
    allocated_bytes += size;
    peak_bytes = std::max(peak_bytes, allocated_bytes);
    return buf;
  }

  void Free(WGPUBuffer buf) {
    auto it = sizes_.find(buf);
    TVM_FFI_ICHECK(it != sizes_.end()) << "wgpu: freeing an unknown buffer";
    Flush();  // recorded work may still use it
    DropBindGroupsOf(buf);
    allocated_bytes -= it->second;
    sizes_.erase(it);
    wgpuBufferDestroy(buf);
    wgpuBufferRelease(buf);
  }

  size_t SizeOf(WGPUBuffer buf) {
    auto it = sizes_.find(buf);
    if (it == sizes_.end()) {
      TVM_FFI_THROW(RuntimeError) << "wgpu: a kernel argument is not a buffer of this device (a tensor view with "
                                     "a byte offset? WebGPU cannot bind at an offset here)";
    }
    return it->second;
  }

  // --- copies ---
  void Upload(const void* src, WGPUBuffer dst, size_t offset, size_t nbytes) {
    if (nbytes == 0) return;
    CheckAligned(offset, "destination offset");
    Flush();  // queue writes land before the next submission: recorded kernels must go first
    size_t whole = nbytes / 4 * 4;
    if (whole) wgpuQueueWriteBuffer(queue, dst, offset, src, whole);
    if (whole != nbytes) {  // a partial last word: merge it with the bytes already there
      uint32_t word = 0;
      Download(dst, offset + whole, &word, 4);
      std::memcpy(&word, static_cast<const char*>(src) + whole, nbytes - whole);
      wgpuQueueWriteBuffer(queue, dst, offset + whole, &word, 4);
    }
  }

  void Download(WGPUBuffer src, size_t offset, void* dst, size_t nbytes) {
    if (nbytes == 0) return;
    ffi::Bytes bytes = WaitRead(ReadLater(src, offset, nbytes));
    std::memcpy(dst, bytes.data(), nbytes);
  }

  // A read-back recorded now, in queue order, and waited for later (WaitRead): the greedy stream
  // reads step t's token while step t + 1 runs. A plain download (TVM's copy to the CPU) waits at
  // once, for everything submitted: reading step t's token that way waited for step t + 1 too,
  // and the GPU then idled while the host recorded step t + 2.
  int64_t ReadLater(WGPUBuffer src, size_t offset, size_t nbytes) {
    CheckAligned(offset, "source offset");
    auto read = std::make_unique<Read>();
    read->nbytes = nbytes;
    size_t words = (nbytes + 3) / 4 * 4;
    auto spare = spare_staging_.lower_bound(words);
    if (spare != spare_staging_.end()) {
      read->staging = spare->second;
      spare_staging_.erase(spare);
    } else {
      WGPUBufferDescriptor desc = {};
      desc.usage = WGPUBufferUsage_MapRead | WGPUBufferUsage_CopyDst;
      desc.size = words;
      read->staging = wgpuDeviceCreateBuffer(device, &desc);
    }
    EndPass();
    wgpuCommandEncoderCopyBufferToBuffer(Encoder(), src, offset, read->staging, 0, words);
    Flush();
    read->submission = last_submission_;
    WGPUBufferMapCallbackInfo cb = {};
    cb.mode = WGPUCallbackMode_AllowProcessEvents;
    cb.callback = [](WGPUMapAsyncStatus s, WGPUStringView, void* r, void*) {
      static_cast<Read*>(r)->done = true;
      static_cast<Read*>(r)->status = s;
    };
    cb.userdata1 = read.get();
    wgpuBufferMapAsync(read->staging, WGPUMapMode_Read, 0, words, cb);
    reads_.emplace(++last_read_, std::move(read));
    return last_read_;
  }

  // Wait for the submission of ReadLater's copy (not for later ones) and return its bytes.
  ffi::Bytes WaitRead(int64_t id) {
    auto it = reads_.find(id);
    if (it == reads_.end()) TVM_FFI_THROW(RuntimeError) << "wgpu: read-back " << id << " is not pending";
    std::unique_ptr<Read> read = std::move(it->second);
    reads_.erase(it);
    auto start = std::chrono::steady_clock::now();
    while (!read->done) {
      wgpuDevicePoll(device, true, &read->submission);
      wgpuInstanceProcessEvents(instance_);
    }
    Waited(start);
    CheckError("reading back");
    TVM_FFI_ICHECK(read->status == WGPUMapAsyncStatus_Success) << "wgpu: mapping the read-back buffer failed";
    size_t words = (read->nbytes + 3) / 4 * 4;
    ffi::Bytes bytes(static_cast<const char*>(wgpuBufferGetConstMappedRange(read->staging, 0, words)), read->nbytes);
    wgpuBufferUnmap(read->staging);
    spare_staging_.emplace(wgpuBufferGetSize(read->staging), read->staging);
    return bytes;
  }

  void CopyWithin(WGPUBuffer src, size_t src_offset, WGPUBuffer dst, size_t dst_offset, size_t nbytes) {
    if (nbytes == 0) return;
    CheckAligned(src_offset, "source offset");
    CheckAligned(dst_offset, "destination offset");
    if (nbytes % 4) TVM_FFI_THROW(RuntimeError) << "wgpu: device copies move whole 4-byte words, not " << nbytes << " bytes";
    EndPass();
    wgpuCommandEncoderCopyBufferToBuffer(Encoder(), src, src_offset, dst, dst_offset, nbytes);
  }

  // --- dispatch ---
  // One compute pass holds consecutive dispatches (each dispatch is its own synchronization scope
  // in WebGPU); copies end it.
  void Dispatch(const std::string* name, WGPUComputePipeline pipeline, WGPUBindGroup group, const uint32_t* pod,
                size_t pod_words, const uint32_t grid[3]) {
    if (arena_used_ >= batch_ || (profiling_ && stamps_.size() + 2 > kQueries)) {
      Flush();
      batch_ = std::min(2 * batch_, kArenaSlots);
    }
    if (!pass_) {
      pass_ = wgpuCommandEncoderBeginComputePass(Encoder(), nullptr);
      Stamp(nullptr, 0);
    }
    uint32_t offset = static_cast<uint32_t>(arena_used_ * kUniformSlot);
    std::memcpy(arena_host_.data() + offset, pod, pod_words * 4);
    ++arena_used_;
    wgpuComputePassEncoderSetPipeline(pass_, pipeline);
    wgpuComputePassEncoderSetBindGroup(pass_, 0, group, 1, &offset);
    wgpuComputePassEncoderDispatchWorkgroups(pass_, grid[0], grid[1], grid[2]);
    if (per_pass_) {
      pass_kernel_ = name;
      ++pass_calls_;
    } else {
      Stamp(name, 1);
    }
    ++dispatches;
  }

  // Per-kernel GPU time: with profiling on, a timestamp opens every compute pass and follows every
  // dispatch; a kernel is charged the time since the previous stamp (its run plus the barrier
  // before it). Each submission is then waited for and its stamps read back: slower, but exact.
  // A timestamp costs the GPU ~4.7 us (NVIDIA, docs/benchmarks.md), so `per_pass` stamps only
  // where a pass begins and ends and charges the pass to its last kernel: for timing one kernel
  // called many times.
  void Profile(bool on, bool per_pass) {
    Flush();
    if (on && !has_timestamps) {
      TVM_FFI_THROW(RuntimeError) << "wgpu: " << adapter_name << " has no timestamp queries inside compute passes";
    }
    if (on && !queries_) {
      WGPUQuerySetDescriptor qdesc = {};
      qdesc.type = WGPUQueryType_Timestamp;
      qdesc.count = kQueries;
      queries_ = wgpuDeviceCreateQuerySet(device, &qdesc);
      WGPUBufferDescriptor bdesc = {};
      bdesc.usage = WGPUBufferUsage_QueryResolve | WGPUBufferUsage_CopySrc;
      bdesc.size = kQueries * 8;
      resolved_ = wgpuDeviceCreateBuffer(device, &bdesc);
    }
    if (on) kernel_ns.clear();
    profiling_ = on;
    per_pass_ = on && per_pass;
  }
  std::map<std::string, std::pair<uint64_t, uint64_t>> kernel_ns;  // name -> (ns, calls)

  // Submit what is recorded (uniforms first: one write for the whole batch).
  void Flush() {
    if (!encoder_) return;
    EndPass();
    size_t stamps = stamps_.size();
    if (stamps) wgpuCommandEncoderResolveQuerySet(encoder_, queries_, 0, stamps, resolved_, 0);
    if (arena_used_) wgpuQueueWriteBuffer(queue, arena_, 0, arena_host_.data(), arena_used_ * kUniformSlot);
    WGPUCommandBuffer cmd = wgpuCommandEncoderFinish(encoder_, nullptr);
    wgpuCommandEncoderRelease(encoder_);
    encoder_ = nullptr;
    arena_used_ = 0;
    last_submission_ = wgpuQueueSubmitForIndex(queue, 1, &cmd);
    wgpuCommandBufferRelease(cmd);
    ++submissions;
    CheckError("submitting kernels");
    if (stamps) ChargeStamps();
  }

  void Sync() {
    if (!device) return;
    Flush();
    auto start = std::chrono::steady_clock::now();
    wgpuDevicePoll(device, true, nullptr);
    Waited(start);
    CheckError("running kernels");
  }

  // Bind groups keyed by (layout, buffers); dropped when one of their buffers is freed.
  // `views`: extra bindings (after the uniform) that bind buffers[arg] again, as the wide-load
  // views of WideLoads below.
  WGPUBindGroup BindGroup(WGPUBindGroupLayout layout, const std::vector<WGPUBuffer>& buffers, size_t pod_bytes,
                          const std::vector<size_t>& views) {
    key_.assign(1, layout);  // a member: no allocation per dispatch once warm
    key_.insert(key_.end(), buffers.begin(), buffers.end());
    auto it = bind_groups_.find(key_);
    if (it != bind_groups_.end()) return it->second;
    std::vector<WGPUBindGroupEntry> entries(buffers.size() + 1 + views.size());
    for (size_t i = 0; i < buffers.size(); ++i) {
      entries[i].binding = static_cast<uint32_t>(i);
      entries[i].buffer = buffers[i];
      entries[i].size = SizeOf(buffers[i]);
      if (entries[i].size > limits.maxStorageBufferBindingSize) {
        TVM_FFI_THROW(RuntimeError) << "wgpu: a kernel binds a buffer of " << entries[i].size
                                    << " bytes; the adapter binds at most " << limits.maxStorageBufferBindingSize
                                    << " (maxStorageBufferBindingSize on " << adapter_name << ")";
      }
    }
    WGPUBindGroupEntry& uniform = entries[buffers.size()];
    uniform.binding = static_cast<uint32_t>(buffers.size());
    uniform.buffer = arena_;
    uniform.size = (pod_bytes + 15) / 16 * 16;
    for (size_t v = 0; v < views.size(); ++v) {
      WGPUBindGroupEntry& e = entries[buffers.size() + 1 + v];
      e = entries[views[v]];
      e.binding = static_cast<uint32_t>(buffers.size() + 1 + v);
    }
    WGPUBindGroupDescriptor desc = {};
    desc.layout = layout;
    desc.entryCount = entries.size();
    desc.entries = entries.data();
    WGPUBindGroup group = wgpuDeviceCreateBindGroup(device, &desc);
    CheckError("creating a bind group");
    bind_groups_.emplace(key_, group);
    return group;
  }

 private:
  Context() = default;

  void Init() {
    std::call_once(init_once_, [this] { init_error_ = CreateDevice(); });
  }

  std::string CreateDevice() {
    WGPUInstanceExtras extras = {};
    extras.chain.sType = static_cast<WGPUSType>(WGPUSType_InstanceExtras);
    extras.backends = WGPUInstanceBackend_Vulkan;
    WGPUInstanceDescriptor idesc = {};
    idesc.nextInChain = &extras.chain;
    instance_ = wgpuCreateInstance(&idesc);
    if (!instance_) return "wgpu could not create an instance";

    Requested<WGPUAdapter, WGPURequestAdapterStatus, WGPURequestAdapterStatus_Success> ar;
    WGPURequestAdapterOptions opts = {};
    opts.powerPreference = WGPUPowerPreference_HighPerformance;
    WGPURequestAdapterCallbackInfo acb = {};
    acb.mode = WGPUCallbackMode_AllowProcessEvents;
    acb.callback = decltype(ar)::Callback;
    acb.userdata1 = &ar;
    wgpuInstanceRequestAdapter(instance_, &opts, acb);
    while (!ar.done) wgpuInstanceProcessEvents(instance_);
    if (!ar.handle) {
      return "no Vulkan adapter found (" + ar.message +
             "). Install a Vulkan driver: Debian `apt-get install mesa-vulkan-drivers libvulkan1` "
             "(lavapipe on the CPU, RADV on AMD GPUs), or the GPU vendor's driver";
    }
    adapter_ = ar.handle;
    WGPUAdapterInfo info = {};
    wgpuAdapterGetInfo(adapter_, &info);
    adapter_name = View(info.device);
    backend = info.backendType == WGPUBackendType_Vulkan ? "Vulkan" : "not Vulkan";
    adapter_type = info.adapterType == WGPUAdapterType_DiscreteGPU     ? "discrete"
                   : info.adapterType == WGPUAdapterType_IntegratedGPU ? "integrated"
                   : info.adapterType == WGPUAdapterType_CPU           ? "cpu"
                                                                       : "unknown";
    wgpuAdapterInfoFreeMembers(info);
    wgpuAdapterGetLimits(adapter_, &limits);

    std::vector<WGPUFeatureName> features;
    has_f16 = wgpuAdapterHasFeature(adapter_, WGPUFeatureName_ShaderF16);
    if (has_f16) features.push_back(WGPUFeatureName_ShaderF16);
    // WGSL's `enable subgroups;`: the standard feature, or wgpu-native's name for it.
    for (auto f : {WGPUFeatureName_Subgroups, static_cast<WGPUFeatureName>(WGPUNativeFeature_Subgroup)}) {
      if (!has_subgroups && wgpuAdapterHasFeature(adapter_, f)) {
        has_subgroups = true;
        features.push_back(f);
      }
    }

    // Timestamps between dispatches (wgpu-native's feature) for per-kernel profiles.
    auto inside_passes = static_cast<WGPUFeatureName>(WGPUNativeFeature_TimestampQueryInsidePasses);
    has_timestamps = wgpuAdapterHasFeature(adapter_, inside_passes) && wgpuAdapterHasFeature(adapter_, WGPUFeatureName_TimestampQuery);
    if (has_timestamps) features.insert(features.end(), {WGPUFeatureName_TimestampQuery, inside_passes});
    const char* checks = std::getenv("MLCGEN_WGPU_BOUNDS_CHECKS");
    bounds_checks = checks && std::string(checks) == "1";

    Requested<WGPUDevice, WGPURequestDeviceStatus, WGPURequestDeviceStatus_Success> dr;
    WGPUDeviceDescriptor ddesc = {};
    ddesc.requiredFeatureCount = features.size();
    ddesc.requiredFeatures = features.data();
    ddesc.requiredLimits = &limits;  // everything the adapter offers (big bindings, big workgroups)
    ddesc.uncapturedErrorCallbackInfo.callback = [](WGPUDevice const*, WGPUErrorType, WGPUStringView m, void* u, void*) {
      auto* pending = static_cast<std::string*>(u);
      if (pending->empty()) *pending = View(m);
    };
    ddesc.uncapturedErrorCallbackInfo.userdata1 = &pending_error_;
    WGPURequestDeviceCallbackInfo dcb = {};
    dcb.mode = WGPUCallbackMode_AllowProcessEvents;
    dcb.callback = decltype(dr)::Callback;
    dcb.userdata1 = &dr;
    wgpuAdapterRequestDevice(adapter_, &ddesc, dcb);
    while (!dr.done) wgpuInstanceProcessEvents(instance_);
    if (!dr.handle) return "the Vulkan adapter " + adapter_name + " refused a device: " + dr.message;
    device = dr.handle;
    queue = wgpuDeviceGetQueue(device);

    arena_host_.assign(kArenaBytes, 0);
    WGPUBufferDescriptor adesc = {};
    adesc.usage = WGPUBufferUsage_Uniform | WGPUBufferUsage_CopyDst;
    adesc.size = kArenaBytes;
    arena_ = wgpuDeviceCreateBuffer(device, &adesc);
    return "";
  }

  void Stamp(const std::string* name, size_t calls) {
    if (!profiling_) return;
    wgpuComputePassEncoderWriteTimestamp(pass_, queries_, static_cast<uint32_t>(stamps_.size()));
    stamps_.emplace_back(name, calls);
  }

  void ChargeStamps() {
    auto stamps = std::move(stamps_);  // taken first: the read-back's own submission has none
    stamps_.clear();
    std::vector<uint64_t> ticks(stamps.size());
    Download(resolved_, 0, ticks.data(), ticks.size() * 8);
    double ns_per_tick = wgpuQueueGetTimestampPeriod(queue);
    for (size_t i = 1; i < stamps.size(); ++i) {
      if (!stamps[i].first) continue;  // a pass opened: nothing ran since the previous stamp
      auto& [ns, calls] = kernel_ns[*stamps[i].first];
      ns += static_cast<uint64_t>((ticks[i] - ticks[i - 1]) * ns_per_tick);
      calls += stamps[i].second;
    }
  }

  // The host waited for the GPU, which is idle or (after WaitRead) on its last step: the next work
  // goes out soon (kFirstBatch).
  void Waited(std::chrono::steady_clock::time_point start) {
    wait_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
    batch_ = kFirstBatch;
  }

  static void CheckAligned(size_t offset, const char* what) {
    if (offset % 4) TVM_FFI_THROW(RuntimeError) << "wgpu: copies need 4-byte aligned offsets; got " << what << " " << offset;
  }

  WGPUCommandEncoder Encoder() {
    if (!encoder_) encoder_ = wgpuDeviceCreateCommandEncoder(device, nullptr);
    return encoder_;
  }

  void EndPass() {
    if (!pass_) return;
    if (per_pass_ && pass_calls_) Stamp(pass_kernel_, pass_calls_);
    pass_calls_ = 0;
    wgpuComputePassEncoderEnd(pass_);
    wgpuComputePassEncoderRelease(pass_);
    pass_ = nullptr;
  }

  void DropBindGroupsOf(WGPUBuffer buf) {
    for (auto it = bind_groups_.begin(); it != bind_groups_.end();) {
      if (std::find(it->first.begin() + 1, it->first.end(), static_cast<void*>(buf)) != it->first.end()) {
        wgpuBindGroupRelease(it->second);
        it = bind_groups_.erase(it);
      } else {
        ++it;
      }
    }
  }

  struct Read {
    WGPUBuffer staging = nullptr;
    size_t nbytes = 0;
    WGPUSubmissionIndex submission = 0;
    bool done = false;
    WGPUMapAsyncStatus status = WGPUMapAsyncStatus_Error;
  };

  std::once_flag init_once_;
  std::string init_error_;
  std::string pending_error_;
  WGPUInstance instance_ = nullptr;
  WGPUAdapter adapter_ = nullptr;
  WGPUCommandEncoder encoder_ = nullptr;
  WGPUComputePassEncoder pass_ = nullptr;
  WGPUBuffer arena_ = nullptr, resolved_ = nullptr;
  WGPUQuerySet queries_ = nullptr;
  bool profiling_ = false, per_pass_ = false;
  const std::string* pass_kernel_ = nullptr;  // per_pass: the pass's last kernel and its dispatches so far
  size_t pass_calls_ = 0;
  size_t batch_ = kFirstBatch;  // dispatches in the submission being recorded before it goes out
  std::vector<std::pair<const std::string*, size_t>> stamps_;  // per timestamp: the kernel it ends (null: a pass began), its calls
  size_t arena_used_ = 0;
  std::vector<uint8_t> arena_host_;
  std::unordered_map<WGPUBuffer, size_t> sizes_;
  std::map<std::vector<void*>, WGPUBindGroup> bind_groups_;
  std::vector<void*> key_;
  WGPUSubmissionIndex last_submission_ = 0;
  std::map<int64_t, std::unique_ptr<Read>> reads_;  // ReadLater's copies not yet waited for
  int64_t last_read_ = 0;
  std::multimap<size_t, WGPUBuffer> spare_staging_;  // read-back buffers not in use, by size
};

// ---------------------------------------------------------------------------------------------
class WgpuDeviceAPI final : public DeviceAPI {
 public:
  static WgpuDeviceAPI* Global() {
    static WgpuDeviceAPI* inst = new WgpuDeviceAPI();
    return inst;
  }

  void SetDevice(DLDevice) final {}

  void GetAttr(DLDevice dev, DeviceAttrKind kind, ffi::Any* rv) final {
    Context* c = Context::Global();
    if (kind == tvm::runtime::kExist) {
      *rv = static_cast<int>(dev.device_id == 0 && c->Ready());
      return;
    }
    if (!c->Ready()) return;
    switch (kind) {
      case tvm::runtime::kMaxThreadsPerBlock: *rv = static_cast<int64_t>(c->limits.maxComputeInvocationsPerWorkgroup); break;
      case tvm::runtime::kMaxSharedMemoryPerBlock: *rv = static_cast<int64_t>(c->limits.maxComputeWorkgroupStorageSize); break;
      case tvm::runtime::kDeviceName: *rv = ffi::String(c->adapter_name); break;
      case tvm::runtime::kApiVersion: *rv = ffi::String(c->backend); break;
      default: break;  // not known through WebGPU: the caller sees None
    }
  }

  void* AllocDataSpace(DLDevice, size_t nbytes, size_t, DLDataType) final { return Context::Global()->Alloc(nbytes); }
  void FreeDataSpace(DLDevice, void* ptr) final { Context::Global()->Free(static_cast<WGPUBuffer>(ptr)); }
  // A kernel's temporary buffers (split-KV attention's partial results, every layer, every step):
  // kept for reuse rather than freed, since freeing flushes the recorded work. Reuse needs no
  // flush: the queue runs dispatches in order.
  void* AllocWorkspace(DLDevice, size_t nbytes, DLDataType) final {
    auto it = spare_.lower_bound(nbytes);
    if (it == spare_.end()) return Context::Global()->Alloc(nbytes);
    WGPUBuffer buf = it->second;
    spare_.erase(it);
    return buf;
  }
  void FreeWorkspace(DLDevice, void* ptr) final {
    auto buf = static_cast<WGPUBuffer>(ptr);
    spare_.emplace(Context::Global()->SizeOf(buf), buf);
  }
  // One queue: streams are all the default one, and it runs in submission order.
  TVMStreamHandle CreateStream(DLDevice) final { return nullptr; }
  void FreeStream(DLDevice, TVMStreamHandle) final {}
  void SetStream(DLDevice, TVMStreamHandle) final {}
  void SyncStreamFromTo(DLDevice, TVMStreamHandle, TVMStreamHandle) final {}
  void StreamSync(DLDevice, TVMStreamHandle) final { Context::Global()->Sync(); }

 protected:
  void CopyDataFromTo(const void* from, size_t from_offset, void* to, size_t to_offset, size_t size,
                      DLDevice dev_from, DLDevice dev_to, DLDataType, TVMStreamHandle) final {
    Context* c = Context::Global();
    bool from_gpu = dev_from.device_type == kDLWebGPU, to_gpu = dev_to.device_type == kDLWebGPU;
    auto buf = [](const void* p) { return static_cast<WGPUBuffer>(const_cast<void*>(p)); };
    if (from_gpu && to_gpu) {
      c->CopyWithin(buf(from), from_offset, buf(to), to_offset, size);
    } else if (from_gpu && dev_to.device_type == kDLCPU) {
      c->Download(buf(from), from_offset, static_cast<char*>(to) + to_offset, size);
    } else if (dev_from.device_type == kDLCPU && to_gpu) {
      c->Upload(static_cast<const char*>(from) + from_offset, buf(to), to_offset, size);
    } else {
      TVM_FFI_THROW(RuntimeError) << "wgpu: copies go between the CPU and the webgpu device only";
    }
  }

 private:
  std::multimap<size_t, WGPUBuffer> spare_;  // workspace buffers by size
};

// ---------------------------------------------------------------------------------------------
// One WGSL kernel: its pipeline (built on first call) and how its arguments map to bindings.
class Kernel {
 public:
  Kernel(std::string name, std::string wgsl, std::vector<DLDataType> arg_types, std::vector<std::string> tags)
      : name_(std::move(name)), wgsl_(std::move(wgsl)) {
    for (const std::string& tag : tags) {
      if (tag.rfind("blockIdx.", 0) == 0) {
        launch_dims_.push_back(tag.back() - 'x');
      } else if (tag.rfind("threadIdx.", 0) == 0) {
        launch_dims_.push_back(3 + tag.back() - 'x');  // fixed in the WGSL's @workgroup_size
      } else if (tag.rfind("paramWriteAccess:", 0) == 0) {
        for (char ch : tag.substr(17)) if (ch == '0' || ch == '1') write_access_.push_back(ch - '0');
      } else {
        TVM_FFI_THROW(RuntimeError) << "wgpu: kernel " << name_ << " has a launch parameter this runtime cannot handle: " << tag;
      }
    }
    for (size_t i = 0; i < arg_types.size(); ++i) {
      const DLDataType& t = arg_types[i];
      if (t.code == kDLOpaqueHandle) {
        buffer_args_.push_back(i);
      } else if (t.code == kDLInt || t.code == kDLUInt || t.code == kDLFloat) {
        pod_args_.emplace_back(i, t.code);
      } else {
        TVM_FFI_THROW(RuntimeError) << "wgpu: kernel " << name_ << " takes an argument of unsupported type code " << int(t.code);
      }
    }
    TVM_FFI_ICHECK_EQ(write_access_.size(), buffer_args_.size()) << "wgpu: kernel " << name_ << ": paramWriteAccess mismatch";
  }

  void operator()(ffi::PackedArgs args) {
    Context* c = Context::Global();
    if (!pipeline_) Build(c);
    size_t n_fixed = buffer_args_.size() + pod_args_.size();
    TVM_FFI_ICHECK_EQ(static_cast<size_t>(args.size()), n_fixed + launch_dims_.size()) << "wgpu: kernel " << name_;
    uint32_t work[6] = {1, 1, 1, 1, 1, 1};
    for (size_t i = 0; i < launch_dims_.size(); ++i) work[launch_dims_[i]] = static_cast<uint32_t>(args[n_fixed + i].cast<int64_t>());
    TVM_FFI_ICHECK_EQ(work[2], 1u) << "wgpu: blockIdx.z is reserved for folding wide grids";
    uint32_t grid[3] = {work[0], work[1], 1};
    uint32_t blocks = work[0];
    if (blocks > kMaxGridDim) {  // fold x into z; the kernel skips blocks past packGridDimX
      grid[2] = (blocks + kMaxGridDim - 1) / kMaxGridDim;
      grid[0] = (blocks + grid[2] - 1) / grid[2];
    }
    buffers_.clear();
    for (size_t i : buffer_args_) buffers_.push_back(static_cast<WGPUBuffer>(args[i].cast<void*>()));
    pod_.clear();
    for (auto [i, code] : pod_args_) {
      uint32_t word;
      if (code == kDLFloat) {
        float f = static_cast<float>(args[i].cast<double>());
        std::memcpy(&word, &f, 4);
      } else {
        word = static_cast<uint32_t>(args[i].cast<int64_t>());  // WGSL has 32-bit integers only
      }
      pod_.push_back(word);
    }
    // The generated guard reads `if (block > packGridDimX) return;`: passing blocks - 1 makes the
    // padding blocks of a folded grid return too (the JavaScript runtime passes blocks and lets one
    // extra block run).
    pod_.push_back(blocks - 1);
    WGPUBindGroup group = c->BindGroup(layout_, buffers_, pod_.size() * 4, views_);
    c->Dispatch(&name_, pipeline_, group, pod_.data(), pod_.size(), grid);
  }

 private:
  void Build(Context* c) {
    c->Require();
    std::string code = WideLoads(wgsl_, c->limits.maxStorageBuffersPerShaderStage);
    c->wide_load_views += views_.size();
    size_t n = buffer_args_.size();
    std::vector<WGPUBindGroupLayoutEntry> entries(n + 1 + views_.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      entries[i].binding = static_cast<uint32_t>(i);
      entries[i].visibility = WGPUShaderStage_Compute;
      if (i == n) {
        entries[i].buffer.type = WGPUBufferBindingType_Uniform;
        entries[i].buffer.hasDynamicOffset = true;
      } else {
        entries[i].buffer.type = i < n && write_access_[i] ? WGPUBufferBindingType_Storage : WGPUBufferBindingType_ReadOnlyStorage;
      }
    }
    WGPUBindGroupLayoutDescriptor ldesc = {};
    ldesc.entryCount = entries.size();
    ldesc.entries = entries.data();
    layout_ = wgpuDeviceCreateBindGroupLayout(c->device, &ldesc);
    WGPUPipelineLayoutDescriptor pdesc = {};
    pdesc.bindGroupLayoutCount = 1;
    pdesc.bindGroupLayouts = &layout_;
    WGPUPipelineLayout playout = wgpuDeviceCreatePipelineLayout(c->device, &pdesc);

    // Naga (wgpu's WGSL compiler) rejects the `enable subgroups;` directive TVM emits but compiles
    // the subgroup built-ins once the device has the feature: drop the directive.
    size_t at = code.find("enable subgroups;");
    if (at != std::string::npos) {
      if (!c->has_subgroups) {
        TVM_FFI_THROW(RuntimeError) << "wgpu: kernel " << name_ << " uses subgroups, which " << c->adapter_name
                                    << " lacks; build for a vulkan target without subgroups";
      }
      code.erase(at, std::strlen("enable subgroups;"));
    }
    WGPUShaderSourceWGSL src = {};
    src.chain.sType = WGPUSType_ShaderSourceWGSL;
    src.code = View(code);
    WGPUShaderModuleDescriptor sdesc = {};
    sdesc.nextInChain = &src.chain;
    // By default Naga compiles without a clamp per buffer access: TVM's kernels index in bounds by
    // construction (their CUDA and ROCm builds run unchecked too), and the engine checks token ids,
    // the one index that comes from outside. Unchecked, 7B decode runs at 154 instead of 111 tok/s
    // and prefill at 748 instead of 397 on the H200 (docs/benchmarks.md).
    WGPUShaderModule shader = c->bounds_checks ? wgpuDeviceCreateShaderModule(c->device, &sdesc)
                                               : wgpuDeviceCreateShaderModuleTrusted(c->device, &sdesc, WGPUShaderRuntimeChecks_None);
    c->CheckError(("compiling the WGSL of kernel " + name_).c_str());
    WGPUComputePipelineDescriptor cdesc = {};
    cdesc.layout = playout;
    cdesc.compute.module = shader;
    cdesc.compute.entryPoint = View(name_);
    pipeline_ = wgpuDeviceCreateComputePipeline(c->device, &cdesc);
    wgpuShaderModuleRelease(shader);
    wgpuPipelineLayoutRelease(playout);
    c->CheckError(("creating the pipeline of kernel " + name_).c_str());
  }

  // TVM's WGSL declares every buffer as an array of scalars and writes a vector load as
  // `vec4<T>(p[i + 0], p[i + 1], p[i + 2], p[i + 3])`: four scalar loads, where CUDA gets one
  // 128-bit load. For each read-only buffer loaded that way, bind the same buffer a second time
  // as array<vec4<T>> and load through it when i is a multiple of 4 (the scalar loads remain
  // for other i). One load of another type: `vec4<u32>` over an fp16 buffer is the decode GEMV
  // reading its activation as words (schedules/packed_dot.py activation_words; TVM keeps the
  // buffer's fp16 declaration, and i counts words, always a multiple of 4), bound as
  // array<vec4<u32>>. Returns the rewritten WGSL and sets views_ (the buffer argument behind each
  // extra binding); kernels that would exceed the adapter's storage bindings stay as they are.
  std::string WideLoads(const std::string& wgsl, uint32_t max_storage_bindings) {
    static const std::regex load(R"(vec4<(u32|i32|f32|f16)>\((\w+)\[([^\[\]]+) \+ 0\], \2\[\3 \+ 1\], \2\[\3 \+ 2\], \2\[\3 \+ 3\]\))");
    static const std::regex decl(R"(@group\(0\) @binding\((\d+)\) var<storage, read> (\w+) : array<(u32|i32|f32|f16)>;)");
    std::map<std::string, std::pair<size_t, std::string>> readonly;  // name -> (binding, element type)
    for (auto it = std::sregex_iterator(wgsl.begin(), wgsl.end(), decl); it != std::sregex_iterator(); ++it) {
      readonly[(*it)[2]] = {std::stoul((*it)[1]), (*it)[3]};
    }
    std::vector<std::pair<std::string, std::string>> views;  // (buffer, vector element type), in binding order
    std::string out, helpers;
    auto last = wgsl.cbegin();
    for (auto it = std::sregex_iterator(wgsl.begin(), wgsl.end(), load); it != std::sregex_iterator(); ++it) {
      const std::smatch& m = *it;
      auto ro = readonly.find(m[2]);
      out.append(last, m[0].first);
      last = m[0].second;
      bool words = ro != readonly.end() && ro->second.second == "f16" && m[1] == "u32";
      if (ro == readonly.end() || (ro->second.second != m[1] && !words)) {
        out += m.str();
        continue;
      }
      std::pair<std::string, std::string> view{m[2], m[1]};
      if (std::find(views.begin(), views.end(), view) == views.end()) views.push_back(view);
      out += "mlcgen_load4_" + m.str(2) + "_" + m.str(1) + "(i32(" + m.str(3) + "))";
    }
    out.append(last, wgsl.cend());
    size_t n = buffer_args_.size();
    bool words = std::any_of(views.begin(), views.end(), [&](const auto& v) { return v.second != readonly[v.first].second; });
    if (words && n + views.size() > max_storage_bindings) {  // without its view, the word load reads fp16 values
      throw std::runtime_error("kernel " + name_ + " reads an fp16 buffer as words and needs " + std::to_string(n + views.size()) +
                               " storage bindings; the adapter offers " + std::to_string(max_storage_bindings));
    }
    if (views.empty() || n + views.size() > max_storage_bindings) return wgsl;
    for (size_t v = 0; v < views.size(); ++v) {
      const auto& [name, type] = views[v];
      std::string view = name + "_v4" + type, helper = "mlcgen_load4_" + name + "_" + type;
      views_.push_back(readonly[name].first);
      helpers += "@group(0) @binding(" + std::to_string(n + 1 + v) + ") var<storage, read> " + view + " : array<vec4<" + type + ">>;\n";
      if (type != readonly[name].second) {  // activation words: i is a multiple of 4
        helpers += "fn " + helper + "(i : i32) -> vec4<u32> { return " + view + "[i >> 2]; }\n";
        continue;
      }
      helpers += "fn " + helper + "(i : i32) -> vec4<" + type + "> {\n" +
                 "  if ((i & 3) == 0) { return " + view + "[i >> 2]; }\n" +
                 "  return vec4<" + type + ">(" + name + "[i], " + name + "[i + 1], " + name + "[i + 2], " + name + "[i + 3]);\n}\n";
    }
    return out + helpers;
  }

  std::string name_, wgsl_;
  std::vector<size_t> views_;  // per extra binding after the uniform: the buffer argument it views
  std::vector<int> launch_dims_;  // per launch argument: 0-2 blockIdx.xyz, 3-5 threadIdx.xyz
  std::vector<size_t> buffer_args_;
  std::vector<std::pair<size_t, uint8_t>> pod_args_;
  std::vector<int> write_access_;  // per buffer argument: 1 if the kernel writes it
  WGPUBindGroupLayout layout_ = nullptr;
  WGPUComputePipeline pipeline_ = nullptr;
  std::vector<WGPUBuffer> buffers_;  // scratch, reused per call
  std::vector<uint32_t> pod_;
};

class WgpuModule final : public ffi::ModuleObj {
 public:
  explicit WgpuModule(std::unordered_map<std::string, std::shared_ptr<Kernel>> kernels, std::string source)
      : kernels_(std::move(kernels)), source_(std::move(source)) {}
  const char* kind() const final { return "webgpu"; }
  ffi::Optional<ffi::Function> GetFunction(const ffi::String& name) final {
    auto it = kernels_.find(std::string(name));
    if (it == kernels_.end()) return std::nullopt;
    std::shared_ptr<Kernel> k = it->second;
    return ffi::Function([k](ffi::PackedArgs args, ffi::Any*) { (*k)(args); });
  }
  ffi::String InspectSource(const ffi::String&) const final { return source_; }

 private:
  std::unordered_map<std::string, std::shared_ptr<Kernel>> kernels_;
  std::string source_;
};

// The bytes TVM's webgpu codegen saves: a map name -> FunctionInfo{name, arg_types, launch tags,
// extra tags}, then a map name -> WGSL; counts and string lengths are little-endian uint64.
class Reader {
 public:
  explicit Reader(const ffi::Bytes& b) : p_(b.data()), end_(b.data() + b.size()) {}
  uint64_t U64() { uint64_t v; Take(&v, 8); return v; }
  std::string Str() { std::string s(U64(), '\0'); Take(s.data(), s.size()); return s; }
  void Take(void* dst, size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) TVM_FFI_THROW(RuntimeError) << "wgpu: the library's WGSL module is truncated";
    std::memcpy(dst, p_, n);
    p_ += n;
  }

 private:
  const char* p_;
  const char* end_;
};

ffi::Module LoadFromBytes(const ffi::Bytes& bytes) {
  Reader r(bytes);
  struct Info { std::vector<DLDataType> types; std::vector<std::string> tags; };
  std::unordered_map<std::string, Info> infos;
  for (uint64_t n = r.U64(); n--;) {
    std::string key = r.Str();
    Info info;
    r.Str();  // the FunctionInfo's own name (same as the key)
    info.types.resize(r.U64());
    for (DLDataType& t : info.types) r.Take(&t, sizeof(DLDataType));
    info.tags.resize(r.U64());
    for (std::string& t : info.tags) t = r.Str();
    for (uint64_t extra = r.U64(); extra--;) { int32_t tag; r.Take(&tag, 4); }
    infos.emplace(std::move(key), std::move(info));
  }
  std::unordered_map<std::string, std::shared_ptr<Kernel>> kernels;
  std::string source;
  for (uint64_t n = r.U64(); n--;) {
    std::string name = r.Str(), wgsl = r.Str();
    auto it = infos.find(name);
    TVM_FFI_ICHECK(it != infos.end()) << "wgpu: kernel " << name << " has no function info";
    source += wgsl;
    kernels.emplace(name, std::make_shared<Kernel>(name, std::move(wgsl), it->second.types, it->second.tags));
  }
  return ffi::Module(ffi::make_object<WgpuModule>(std::move(kernels), std::move(source)));
}

// ---------------------------------------------------------------------------------------------
// Facts WebGPU does not report, read from Vulkan itself for the physical device whose name matches
// the wgpu adapter: memory heap sizes, and the subgroup width (kernels compiled for subgroups of 32
// must only run where every subgroup is 32 wide). Declares the few Vulkan structs it reads, so
// that no Vulkan headers are needed.
struct VulkanFacts {
  uint64_t device_local = 0, total = 0;
  uint32_t subgroup_size = 0, subgroup_min = 0, subgroup_max = 0;
};

VulkanFacts QueryVulkan(const std::string& adapter_name) {
  struct MemoryHeap { uint64_t size; uint32_t flags; };
  struct MemoryProperties { uint32_t type_count; struct { uint32_t flags, heap; } types[32]; uint32_t heap_count; MemoryHeap heaps[16]; };
  struct AppInfo { int32_t sType; const void* next; const char* app; uint32_t app_version; const char* engine; uint32_t engine_version; uint32_t api; };
  struct InstanceCreateInfo { int32_t sType; const void* next; uint32_t flags; const AppInfo* app; uint32_t layers; const char* const* layer_names; uint32_t exts; const char* const* ext_names; };
  struct SubgroupProperties { int32_t sType; void* next; uint32_t size, stages, operations, quad; };
  struct SizeControlProperties { int32_t sType; void* next; uint32_t min, max, max_workgroup_subgroups, stages; };
  // VkPhysicalDeviceProperties2: sType, pNext, then VkPhysicalDeviceProperties (whose deviceName
  // follows five uint32s); the rest of it is left to the driver to fill.
  struct Properties2 { int32_t sType; void* next; uint32_t api, driver, vendor, device, type; char name[256]; uint8_t rest[4096]; };
  using CreateInstance = int32_t (*)(const InstanceCreateInfo*, const void*, void**);
  using Enumerate = int32_t (*)(void*, uint32_t*, void**);
  using GetProps2 = void (*)(void*, Properties2*);
  using GetMem = void (*)(void*, MemoryProperties*);
  using Destroy = void (*)(void*, const void*);
  VulkanFacts out;
  void* lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return out;
  auto create = reinterpret_cast<CreateInstance>(dlsym(lib, "vkCreateInstance"));
  auto enumerate = reinterpret_cast<Enumerate>(dlsym(lib, "vkEnumeratePhysicalDevices"));
  auto props = reinterpret_cast<GetProps2>(dlsym(lib, "vkGetPhysicalDeviceProperties2"));
  auto mem = reinterpret_cast<GetMem>(dlsym(lib, "vkGetPhysicalDeviceMemoryProperties"));
  auto destroy = reinterpret_cast<Destroy>(dlsym(lib, "vkDestroyInstance"));
  AppInfo app = {0 /* APPLICATION_INFO */, nullptr, "mlcgen", 0, "mlcgen", 0, (1u << 22) | (1u << 12) /* 1.1 */};
  InstanceCreateInfo ci = {1 /* INSTANCE_CREATE_INFO */, nullptr, 0, &app, 0, nullptr, 0, nullptr};
  void* inst = nullptr;
  if (create && enumerate && props && mem && destroy && create(&ci, nullptr, &inst) == 0) {
    uint32_t n = 0;
    enumerate(inst, &n, nullptr);
    std::vector<void*> devs(n);
    enumerate(inst, &n, devs.data());
    for (void* d : devs) {
      auto p = std::make_unique<Properties2>();
      SizeControlProperties size_control = {1000225000 /* SUBGROUP_SIZE_CONTROL_PROPERTIES */, nullptr, 0, 0, 0, 0};
      SubgroupProperties subgroup = {1000094000 /* SUBGROUP_PROPERTIES */, &size_control, 0, 0, 0, 0};
      p->sType = 1000059001;  // PHYSICAL_DEVICE_PROPERTIES_2
      p->next = &subgroup;
      props(d, p.get());
      if (!adapter_name.empty() && adapter_name != p->name) continue;
      out.subgroup_size = subgroup.size;
      out.subgroup_min = size_control.min;
      out.subgroup_max = size_control.max;
      MemoryProperties m = {};
      mem(d, &m);
      for (uint32_t h = 0; h < m.heap_count; ++h) {
        out.total += m.heaps[h].size;
        if (m.heaps[h].flags & 1 /* HEAP_DEVICE_LOCAL */) out.device_local += m.heaps[h].size;
      }
      break;
    }
    destroy(inst, nullptr);
  }
  dlclose(lib);
  return out;
}

TVM_FFI_STATIC_INIT_BLOCK() {
  namespace refl = tvm::ffi::reflection;
  refl::GlobalDef()
      .def("ffi.Module.load_from_bytes.webgpu", LoadFromBytes)
      .def_packed("device_api.webgpu",
                  [](ffi::PackedArgs, ffi::Any* rv) { *rv = static_cast<void*>(WgpuDeviceAPI::Global()); })
      .def("mlcgen.wgpu.adapter", []() -> ffi::Map<ffi::String, ffi::Any> {
        Context* c = Context::Global();
        ffi::Map<ffi::String, ffi::Any> m;
        m.Set("error", ffi::String(c->InitError()));
        if (!c->Ready()) return m;
        VulkanFacts vk = QueryVulkan(c->adapter_name);
        m.Set("name", ffi::String(c->adapter_name));
        m.Set("backend", ffi::String(c->backend));
        m.Set("adapter_type", ffi::String(c->adapter_type));
        m.Set("shader_f16", c->has_f16);
        m.Set("subgroups", c->has_subgroups);
        m.Set("bounds_checks", c->bounds_checks);
        m.Set("timestamps", c->has_timestamps);
        m.Set("subgroup_size", static_cast<int64_t>(vk.subgroup_size));
        m.Set("subgroup_min_size", static_cast<int64_t>(vk.subgroup_min));
        m.Set("subgroup_max_size", static_cast<int64_t>(vk.subgroup_max));
        m.Set("max_storage_buffer_binding_size", static_cast<int64_t>(c->limits.maxStorageBufferBindingSize));
        m.Set("max_buffer_size", static_cast<int64_t>(c->limits.maxBufferSize));
        m.Set("max_workgroup_storage_size", static_cast<int64_t>(c->limits.maxComputeWorkgroupStorageSize));
        m.Set("max_invocations_per_workgroup", static_cast<int64_t>(c->limits.maxComputeInvocationsPerWorkgroup));
        m.Set("device_local_heap_bytes", static_cast<int64_t>(vk.device_local));
        m.Set("all_heaps_bytes", static_cast<int64_t>(vk.total));
        return m;
      })
      .def("mlcgen.wgpu.counters", []() -> ffi::Map<ffi::String, int64_t> {
        Context* c = Context::Global();
        ffi::Map<ffi::String, int64_t> m;
        m.Set("allocated_bytes", static_cast<int64_t>(c->allocated_bytes));
        m.Set("peak_bytes", static_cast<int64_t>(c->peak_bytes));
        m.Set("dispatches", static_cast<int64_t>(c->dispatches));
        m.Set("submissions", static_cast<int64_t>(c->submissions));
        m.Set("wait_ns", static_cast<int64_t>(c->wait_ns));
        m.Set("wide_load_views", static_cast<int64_t>(c->wide_load_views));
        return m;
      })
      .def("mlcgen.wgpu.read_later",
           [](ffi::Tensor t) -> int64_t {
             const DLTensor* d = t.GetDLTensorPtr();
             TVM_FFI_ICHECK(d->device.device_type == kDLWebGPU && t.IsContiguous()) << "wgpu: read_later takes a contiguous device tensor";
             return Context::Global()->ReadLater(static_cast<WGPUBuffer>(d->data), d->byte_offset, ffi::GetDataSize(*d));
           })
      .def("mlcgen.wgpu.wait_read", [](int64_t id) -> ffi::Bytes { return Context::Global()->WaitRead(id); })
      .def("mlcgen.wgpu.profile", [](bool on, bool per_pass) { Context::Global()->Require(); Context::Global()->Profile(on, per_pass); })
      .def("mlcgen.wgpu.kernel_times", []() -> ffi::Map<ffi::String, ffi::Array<int64_t>> {
        Context* c = Context::Global();
        c->Flush();
        ffi::Map<ffi::String, ffi::Array<int64_t>> m;
        for (const auto& [name, v] : c->kernel_ns) m.Set(name, {static_cast<int64_t>(v.first), static_cast<int64_t>(v.second)});
        return m;
      });
}

}  // namespace wgpu_plugin
}  // namespace mlcgen
