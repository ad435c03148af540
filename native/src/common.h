// Shared helpers: errno errors that JS can switch on (err.code, err.errno, err.syscall, err.path),
// a promise-returning AsyncWorker around a lambda, the monotonic clock, and an fd closer.
#pragma once

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <sys/ioctl.h>
#include <unistd.h>

namespace linesight {

/** CLOCK_MONOTONIC in ns: the clock of process.hrtime.bigint() and of GPIO/V4L2 timestamps. */
inline int64_t MonoNowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

inline const char* ErrnoName(int e) {
  switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case EBUSY: return "EBUSY";
    case EINVAL: return "EINVAL";
    case ENODEV: return "ENODEV";
    case ENXIO: return "ENXIO";
    case ENOTTY: return "ENOTTY";
    case EIO: return "EIO";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case ENOSPC: return "ENOSPC";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENOTSUP: return "ENOTSUP";
    case EBADF: return "EBADF";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOBUFS: return "ENOBUFS";
    case EPIPE: return "EPIPE";
    default: return "EUNKNOWN";
  }
}

/** A failed system call, carried from a worker thread to JS. */
struct SysError {
  int errnum = 0;
  std::string syscall;
  std::string path;
  std::string detail;  // extra words (what was being done)

  bool failed() const { return errnum != 0 || !detail.empty(); }

  std::string Message() const {
    std::string m = syscall.empty() ? std::string() : syscall;
    if (!path.empty()) m += (m.empty() ? "" : " ") + path;
    if (!detail.empty()) m += (m.empty() ? "" : ": ") + detail;
    if (errnum != 0) m += (m.empty() ? "" : ": ") + std::string(std::strerror(errnum)) + " (" + ErrnoName(errnum) + ")";
    return m;
  }

  Napi::Error ToJs(Napi::Env env) const {
    Napi::Error err = Napi::Error::New(env, Message());
    if (errnum != 0) {
      err.Set("code", Napi::String::New(env, ErrnoName(errnum)));
      err.Set("errno", Napi::Number::New(env, errnum));
    }
    if (!syscall.empty()) err.Set("syscall", Napi::String::New(env, syscall));
    if (!path.empty()) err.Set("path", Napi::String::New(env, path));
    return err;
  }
};

inline SysError Sys(const std::string& syscall, const std::string& path, int errnum = errno,
                    const std::string& detail = "") {
  return SysError{errnum, syscall, path, detail};
}

[[noreturn]] inline void ThrowSys(Napi::Env env, const SysError& e) { throw e.ToJs(env); }

/** Owns a file descriptor. */
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

/** ioctl retried on EINTR. */
template <typename T>
inline int Xioctl(int fd, unsigned long req, T arg) {
  int r;
  do {
    r = ::ioctl(fd, req, arg);
  } while (r == -1 && errno == EINTR);
  return r;
}

/**
 * Runs `work` on the libuv thread pool and settles a promise with `done(env)` (or rejects with the
 * SysError `work` returned). Everything `work` touches must be captured by value / owned.
 */
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<SysError()>;
  using Done = std::function<Napi::Value(Napi::Env)>;
  using Fail = std::function<void(Napi::Env)>;

  /** `fail` (optional) runs on the JS thread before the promise is rejected, to undo partial work. */
  static Napi::Promise Run(Napi::Env env, const char* name, Work work, Done done, Fail fail = nullptr) {
    auto* w = new PromiseWorker(env, name, std::move(work), std::move(done));
    w->fail_ = std::move(fail);
    Napi::Promise p = w->deferred_.Promise();
    w->Queue();
    return p;
  }

 protected:
  void Execute() override { err_ = work_(); }
  void OnOK() override {
    Napi::Env env = Env();
    if (err_.failed()) {
      if (fail_) fail_(env);
      deferred_.Reject(err_.ToJs(env).Value());
      return;
    }
    try {
      deferred_.Resolve(done_(env));
    } catch (const Napi::Error& e) {
      if (fail_) fail_(env);
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    if (fail_) fail_(Env());
    deferred_.Reject(e.Value());
  }

 private:
  PromiseWorker(Napi::Env env, const char* name, Work work, Done done)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)), done_(std::move(done)) {}
  Napi::Promise::Deferred deferred_;
  Work work_;
  Done done_;
  Fail fail_;
  SysError err_;
};

inline int64_t ToInt64(const Napi::Value& v, const char* what) {
  if (v.IsBigInt()) {
    bool lossless = true;
    int64_t r = v.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(v.Env(), std::string(what) + " is out of range");
    return r;
  }
  if (v.IsNumber()) return v.As<Napi::Number>().Int64Value();
  throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a bigint or a number");
}

inline std::string GetString(const Napi::Object& o, const char* key, const std::string& def = "") {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return def;
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

inline int64_t GetInt(const Napi::Object& o, const char* key, int64_t def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return def;
  return ToInt64(v, key);
}

inline bool GetBool(const Napi::Object& o, const char* key, bool def) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return def;
  return v.ToBoolean().Value();
}

/** Per-environment state (the main thread and each worker thread load their own). */
struct AddonData {
  Napi::FunctionReference gpioLine;
  Napi::FunctionReference v4l2Device;
  Napi::FunctionReference pulseTimer;
};
inline AddonData* Data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

void InitGpio(Napi::Env env, Napi::Object exports);
void InitV4l2(Napi::Env env, Napi::Object exports);
void InitNotify(Napi::Env env, Napi::Object exports);
void InitJpeg(Napi::Env env, Napi::Object exports);
void InitResize(Napi::Env env, Napi::Object exports);

}  // namespace linesight
