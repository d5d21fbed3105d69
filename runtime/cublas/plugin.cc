// mlcgen's cuBLAS plugin: the q4 matmul that CUDA builds prefill with.
//
// Each q4 matmul of a `prefill_cublas` entry is one call here (compiler/passes.py
// offload_prefill_matmuls): the weight is dequantized to fp16 in row slices, by a kernel compiled
// with the library and passed in as a function, into a scratch buffer this plugin keeps, and each
// slice is multiplied by cuBLAS into its columns of the output. cuBLAS runs the GEMMs on Hopper's
// wgmma tensor cores, which TVM 0.27's TIR has no intrinsics for.
//
// cuBLAS is not linked here: its symbols stay undefined and runtime/cublas.py loads the libcublas
// that is on the machine (torch's nvidia wheel, the CUDA toolkit) into the global scope first, so
// this file compiles without CUDA headers. The few declarations below are cuBLAS's documented C API.

#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/function.h>
#include <tvm/runtime/device_api.h>

#include <algorithm>
#include <map>
#include <mutex>

extern "C" {
typedef struct cublasContext* cublasHandle_t;
int cublasCreate_v2(cublasHandle_t* handle);
int cublasSetStream_v2(cublasHandle_t handle, void* stream);
int cublasGemmEx(cublasHandle_t handle, int transa, int transb, int m, int n, int k, const void* alpha,
                 const void* A, int Atype, int lda, const void* B, int Btype, int ldb, const void* beta, void* C,
                 int Ctype, int ldc, int computeType, int algo);
}

namespace mlcgen {
namespace cublas_plugin {

namespace ffi = tvm::ffi;

// Values of cublasOperation_t, cudaDataType_t, cublasComputeType_t and cublasGemmAlgo_t (cublas_api.h,
// library_types.h).
constexpr int kOpN = 0, kOpT = 1, kFloat16 = 2, kCompute32F = 68, kGemmDefault = -1;

struct DeviceState {
  cublasHandle_t handle = nullptr;
  void* scratch = nullptr;  // the fp16 weight slice
  size_t scratch_bytes = 0;
};

// The device's cuBLAS handle and a scratch buffer of at least `bytes`, made or grown on first need.
DeviceState& State(int device, size_t bytes) {
  static std::mutex mutex;
  static std::map<int, DeviceState> states;
  std::lock_guard<std::mutex> lock(mutex);
  DeviceState& s = states[device];
  if (!s.handle) {
    int status = cublasCreate_v2(&s.handle);
    if (status) TVM_FFI_THROW(RuntimeError) << "cublasCreate failed with status " << status;
  }
  if (s.scratch_bytes < bytes) {
    DLDevice dev{kDLCUDA, device};
    tvm::runtime::DeviceAPI* api = tvm::runtime::DeviceAPI::Get(dev);
    if (s.scratch) api->FreeDataSpace(dev, s.scratch);  // waits for the GPU: work queued may still read it
    s.scratch = api->AllocDataSpace(dev, bytes, 256, DLDataType{kDLFloat, 16, 1});
    s.scratch_bytes = bytes;
  }
  return s;
}

int64_t Rows(const ffi::TensorView& t) {  // every axis but the last
  int64_t rows = 1;
  for (int i = 0; i + 1 < t.ndim(); ++i) rows *= t.size(i);
  return rows;
}

void Check(bool ok, const char* what) {
  if (!ok) TVM_FFI_THROW(ValueError) << "mlcgen.cublas.q4_matmul_nt: " << what;
}

bool IsCudaFp16(const ffi::TensorView& t) {
  return t.dtype().code == kDLFloat && t.dtype().bits == 16 && t.dtype().lanes == 1 &&
         t.device().device_type == kDLCUDA && t.IsContiguous();
}

// out[..., N] = x[..., K] @ W^T, W[N, K] the q4 weight: dequantize(q_weight, q_scale, first, slice)
// writes W[first:first + rows] in fp16, slice_rows rows at a time; float32 accumulation, rounded
// to fp16.
void Q4MatmulNT(ffi::TensorView x, ffi::TensorView q_weight, ffi::TensorView q_scale, ffi::Function dequantize,
                int64_t slice_rows, ffi::TensorView out) {
  Check(IsCudaFp16(x) && IsCudaFp16(out), "x and out must be contiguous float16 CUDA tensors");
  const int64_t m = Rows(x), k = x.size(-1), n = out.size(-1);
  Check(q_weight.ndim() == 2 && q_weight.size(0) == n && Rows(out) == m, "x, q_weight and out disagree in shape");
  Check(slice_rows > 0, "slice_rows must be positive");
  if (m == 0) return;
  const int device = x.device().device_id;
  DeviceState& state = State(device, static_cast<size_t>(std::min(slice_rows, n) * k * 2));
  int status = cublasSetStream_v2(state.handle, TVMFFIEnvGetStream(kDLCUDA, device));
  auto data = [](const ffi::TensorView& t) { return static_cast<char*>(t.data_ptr()) + t.byte_offset(); };
  const float one = 1.0f, zero = 0.0f;
  for (int64_t first = 0; first < n && !status; first += slice_rows) {
    int64_t shape[2] = {std::min(slice_rows, n - first), k};
    DLTensor slice{state.scratch, x.device(), 2, DLDataType{kDLFloat, 16, 1}, shape, nullptr, 0};
    dequantize(q_weight, q_scale, first, &slice);  // same stream: the GEMM before reads the scratch first
    // cuBLAS is column-major: row-major out[M, N] is column-major out^T[N, M]. Its columns
    // first.. of out are out^T's rows: slice[R, K] . x^T, where row-major slice is a column-major
    // K x R matrix (transposed: op T) and row-major x is x^T (op N); ldc = N.
    status = cublasGemmEx(state.handle, kOpT, kOpN, static_cast<int>(shape[0]), static_cast<int>(m),
                          static_cast<int>(k), &one, state.scratch, kFloat16, static_cast<int>(k), data(x), kFloat16,
                          static_cast<int>(k), &zero, data(out) + first * 2, kFloat16, static_cast<int>(n),
                          kCompute32F, kGemmDefault);
  }
  if (status) TVM_FFI_THROW(RuntimeError) << "cuBLAS failed with status " << status;
}

TVM_FFI_STATIC_INIT_BLOCK() {
  // Overrides: runtime/cublas.py registers a stand-in that raises under this name while cuBLAS is
  // missing, and a later load that finds it must replace that.
  ffi::Function::SetGlobal("mlcgen.cublas.q4_matmul_nt", ffi::Function::FromTyped(Q4MatmulNT), /*override=*/true);
}

}  // namespace cublas_plugin
}  // namespace mlcgen
