// Errors thrown by the C++ side; addon.cc turns them into JS Errors with a `code` property.
#pragma once
#include <new>
#include <stdexcept>
#include <string>

namespace tpserve {

struct NativeError : std::runtime_error {
  std::string code;
  NativeError(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

[[noreturn]] inline void fail(const char* code, const std::string& msg) { throw NativeError(code, msg); }

/**
 * Runs f off the main thread, where nothing may escape: an exception becomes `code` (NATIVE_*) and `message`, and
 * the result is false. `what` names the work in the out-of-memory message.
 */
template <class F>
bool captureErrors(F&& f, std::string* code, std::string* message, const char* what) {
  try {
    f();
    return true;
  } catch (const NativeError& e) {
    *code = e.code, *message = e.what();
  } catch (const std::bad_alloc&) {
    *code = "NATIVE_OOM", *message = std::string("out of memory during ") + what;
  } catch (const std::exception& e) {
    *code = "NATIVE_INTERNAL", *message = std::string("internal error: ") + e.what();
  } catch (...) {
    *code = "NATIVE_INTERNAL", *message = "internal error: unknown exception";
  }
  return false;
}

inline std::string shapeStr(long long a, long long b) { return "(" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

}  // namespace tpserve
