// Resolves the NCCL entry points from libnccl.so.2 (see nccl_api.h).
#include <dlfcn.h>

#include <mutex>

#include "nccl_api.h"

namespace tpserve::nccl {

const Api* load(std::string& why) {
  static std::once_flag once;
  static Api api;
  static bool ok = false;
  static std::string error;
  std::call_once(once, [] {
    void* h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      error = std::string("libnccl.so.2 could not be loaded (") + (e ? e : "not found") +
              "): install NCCL 2 or add its directory to LD_LIBRARY_PATH";
      return;
    }
    bool all = true;
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn) {
        if (all) error = std::string("libnccl.so.2 has no symbol ") + name + " (NCCL older than 2.4?)";
        all = false;
      }
    };
    sym(api.getUniqueId, "ncclGetUniqueId");
    sym(api.commInitRank, "ncclCommInitRank");
    sym(api.allReduce, "ncclAllReduce");
    sym(api.allGather, "ncclAllGather");
    sym(api.broadcast, "ncclBroadcast");
    sym(api.commAbort, "ncclCommAbort");
    sym(api.commDestroy, "ncclCommDestroy");
    sym(api.commGetAsyncError, "ncclCommGetAsyncError");
    sym(api.getErrorString, "ncclGetErrorString");
    sym(api.getVersion, "ncclGetVersion");
    ok = all;
    api.commInitAll = reinterpret_cast<decltype(api.commInitAll)>(dlsym(h, "ncclCommInitAll"));
    api.groupStart = reinterpret_cast<decltype(api.groupStart)>(dlsym(h, "ncclGroupStart"));
    api.groupEnd = reinterpret_cast<decltype(api.groupEnd)>(dlsym(h, "ncclGroupEnd"));
  });
  if (!ok) why = error;
  return ok ? &api : nullptr;
}

}  // namespace tpserve::nccl
