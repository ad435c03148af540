// GPIO over the Linux character device, uAPI v2 (linux/gpio.h).
//
//  - listChips / chipInfo / lineInfo: GPIO_GET_CHIPINFO_IOCTL, GPIO_V2_GET_LINEINFO_IOCTL
//  - requestLine: GPIO_V2_GET_LINE_IOCTL for one line (input with edges + kernel debounce, or output
//    with its initial level set atomically with the direction). The returned Line owns the line
//    fd; the kernel releases the line when that fd is closed, also when the process dies.
//  - Line.watch: edge events (kernel CLOCK_MONOTONIC timestamps) delivered to JS by a uv_poll on the
//    line fd: no polling, no thread.
//  - Line.schedulePulse: a per-output native timer thread (timerfd, TFD_TIMER_ABSTIME on
//    CLOCK_MONOTONIC) drives the line at absolute deadlines; overlapping pulses merge. The JS event
//    loop and its GC are not on that path. Edge reports go back to JS through a
//    ThreadSafeFunction (not waited for).
//  - PulseTimer: the same engine without a line: it drives nothing (bench, tests, the simulator),
//    or, given { path }, a sysfs GPIO `value` file opened O_WRONLY once and written with
//    pwrite(fd, "1"/"0", 1, 0) from the pulse thread (the sysfs/onoff binding's outputs).
//
// Opening, listing and reading are done on the libuv pool (promises); set/get values are single
// non-blocking ioctls and are also offered synchronously (writeSync on the safe-state path).

#include <fcntl.h>
#include <glob.h>
#include <linux/gpio.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"

namespace linesight {
namespace {

struct ChipInfo {
  std::string path, name, label;
  uint32_t lines = 0;
};

SysError ReadChipInfo(const std::string& path, ChipInfo* out) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Sys("open", path);
  gpiochip_info info{};
  if (Xioctl(fd.get(), GPIO_GET_CHIPINFO_IOCTL, &info) < 0) {
    int e = errno;
    return Sys("ioctl(GPIO_GET_CHIPINFO)", path, e, e == ENOTTY || e == EINVAL ? "not a GPIO chip" : "");
  }
  out->path = path;
  out->name.assign(info.name, strnlen(info.name, sizeof info.name));
  out->label.assign(info.label, strnlen(info.label, sizeof info.label));
  out->lines = info.lines;
  return {};
}

Napi::Object ChipToJs(Napi::Env env, const ChipInfo& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("path", c.path);
  o.Set("name", c.name);
  o.Set("label", c.label);
  o.Set("lines", c.lines);
  return o;
}

/** listChips(devDir = '/dev'): every gpiochipN there that answers GPIO_GET_CHIPINFO. */
Napi::Value ListChips(const Napi::CallbackInfo& info) {
  std::string dir = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "/dev";
  auto chips = std::make_shared<std::vector<ChipInfo>>();
  auto errors = std::make_shared<std::vector<std::string>>();
  return PromiseWorker::Run(
      info.Env(), "linesight:gpio-list",
      [dir, chips, errors]() -> SysError {
        glob_t g{};
        std::string pattern = dir + "/gpiochip*";
        int r = glob(pattern.c_str(), 0, nullptr, &g);
        if (r == 0) {
          for (size_t i = 0; i < g.gl_pathc; i++) {
            ChipInfo c;
            SysError e = ReadChipInfo(g.gl_pathv[i], &c);
            if (e.failed())
              errors->push_back(e.Message());
            else
              chips->push_back(c);
          }
        }
        globfree(&g);
        // Natural order: gpiochip2 before gpiochip10.
        std::sort(chips->begin(), chips->end(), [](const ChipInfo& a, const ChipInfo& b) {
          return a.path.size() != b.path.size() ? a.path.size() < b.path.size() : a.path < b.path;
        });
        return {};
      },
      [chips, errors](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, chips->size());
        for (size_t i = 0; i < chips->size(); i++) arr.Set(uint32_t(i), ChipToJs(env, (*chips)[i]));
        Napi::Array errs = Napi::Array::New(env, errors->size());
        for (size_t i = 0; i < errors->size(); i++) errs.Set(uint32_t(i), (*errors)[i]);
        arr.Set("errors", errs);
        return arr;
      });
}

Napi::Value ChipInfoJs(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "chipInfo(path: string)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  auto chip = std::make_shared<ChipInfo>();
  return PromiseWorker::Run(
      info.Env(), "linesight:gpio-chipinfo", [path, chip]() { return ReadChipInfo(path, chip.get()); },
      [chip](Napi::Env env) -> Napi::Value { return ChipToJs(env, *chip); });
}

/** lineInfo(path, offset): who holds the line and how it is configured. */
Napi::Value LineInfoJs(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "lineInfo(path: string, offset: number)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  uint32_t offset = uint32_t(ToInt64(info[1], "offset"));
  auto li = std::make_shared<gpio_v2_line_info>();
  return PromiseWorker::Run(
      info.Env(), "linesight:gpio-lineinfo",
      [path, offset, li]() -> SysError {
        Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd.valid()) return Sys("open", path);
        std::memset(li.get(), 0, sizeof *li);
        li->offset = offset;
        if (Xioctl(fd.get(), GPIO_V2_GET_LINEINFO_IOCTL, li.get()) < 0) return Sys("ioctl(GPIO_V2_GET_LINEINFO)", path);
        return {};
      },
      [li](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        uint64_t f = li->flags;
        o.Set("offset", li->offset);
        o.Set("name", std::string(li->name, strnlen(li->name, sizeof li->name)));
        o.Set("consumer", std::string(li->consumer, strnlen(li->consumer, sizeof li->consumer)));
        o.Set("used", bool(f & GPIO_V2_LINE_FLAG_USED));
        o.Set("direction", (f & GPIO_V2_LINE_FLAG_OUTPUT) ? "output" : "input");
        o.Set("activeLow", bool(f & GPIO_V2_LINE_FLAG_ACTIVE_LOW));
        const char* edge = "none";
        bool r = f & GPIO_V2_LINE_FLAG_EDGE_RISING, fa = f & GPIO_V2_LINE_FLAG_EDGE_FALLING;
        if (r && fa) edge = "both";
        else if (r) edge = "rising";
        else if (fa) edge = "falling";
        o.Set("edge", edge);
        const char* bias = "as-is";
        if (f & GPIO_V2_LINE_FLAG_BIAS_PULL_UP) bias = "pull-up";
        else if (f & GPIO_V2_LINE_FLAG_BIAS_PULL_DOWN) bias = "pull-down";
        else if (f & GPIO_V2_LINE_FLAG_BIAS_DISABLED) bias = "disabled";
        o.Set("bias", bias);
        uint32_t debounceUs = 0;
        for (uint32_t i = 0; i < li->num_attrs && i < GPIO_V2_LINE_NUM_ATTRS_MAX; i++)
          if (li->attrs[i].id == GPIO_V2_LINE_ATTR_ID_DEBOUNCE) debounceUs = li->attrs[i].debounce_period_us;
        o.Set("debounceUs", debounceUs);
        return o;
      });
}

// ── the line ───────────────────────────────────────────────────────────────────────────────────

struct Window {
  int64_t startNs, endNs;
  bool driven = false;  // the output was on for it at some point
};

struct PulseEdge {
  int level;
  int64_t atNs;        // when the level was driven (after the ioctl returned)
  int64_t deadlineNs;  // when it was due
  int err;             // errno of a failed set, 0 when driven
};

void CallPulseEdge(Napi::Env env, Napi::Function cb, std::nullptr_t*, PulseEdge* e) {
  std::unique_ptr<PulseEdge> owned(e);
  if (env == nullptr || cb.IsEmpty()) return;
  cb.Call({Napi::Number::New(env, e->level), Napi::BigInt::New(env, e->atNs), Napi::BigInt::New(env, e->deadlineNs),
           Napi::Number::New(env, e->err)});
}
using PulseTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, PulseEdge, CallPulseEdge>;

/**
 * Drives one output at absolute CLOCK_MONOTONIC deadlines from its own thread. Pulses are windows
 * [start, end); the output is on while any window covers now, so overlapping pulses merge (the gate
 * stays open for both parts). `write(level)` returns an errno (0 = ok); the engine of a
 * PulseTimer (bench, tests) has no line and only records when it would have driven it.
 */
class PulseEngine {
 public:
  using Write = std::function<int(int)>;
  PulseEngine(std::string what, bool realtime, Write write)
      : what_(std::move(what)), realtime_(realtime), write_(std::move(write)) {}
  ~PulseEngine() { Stop(); }

  SysError Start() {
    if (thread_.joinable()) return {};
    timerFd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!timerFd_.valid()) return Sys("timerfd_create", what_);
    wakeFd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wakeFd_.valid()) return Sys("eventfd", what_);
    stop_ = false;
    thread_ = std::thread([this]() { Run(); });
    return {};
  }

  /** false when the pulse is already over (its end has passed). */
  bool Schedule(int64_t at, int64_t width) {
    int64_t end = at + width;
    if (end <= MonoNowNs()) return false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      windows_.push_back({at, end, false});
      scheduled_++;
    }
    Wake();
    return true;
  }

  void Cancel() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      windows_.clear();
    }
    Wake();
  }

  /** Tell the engine the level JS wrote directly, so the next transition is computed from it. */
  void NoteLevel(int level) {
    std::lock_guard<std::mutex> lk(mu_);
    level_ = level;
    ownHigh_ = false;
  }

  void SetListener(Napi::Env env, Napi::Function cb) {
    std::lock_guard<std::mutex> lk(mu_);
    if (hasTsfn_) tsfn_.Release();
    tsfn_ = PulseTsfn::New(env, cb, "linesight:gpio-pulse-edge", 0, 1);
    tsfn_.Unref(env);
    hasTsfn_ = true;
  }

  Napi::Object Stats(Napi::Env env) {
    std::lock_guard<std::mutex> lk(mu_);
    Napi::Object o = Napi::Object::New(env);
    o.Set("scheduled", double(scheduled_));
    o.Set("edges", double(edges_));
    o.Set("pending", double(windows_.size()));
    o.Set("level", level_ < 0 ? 0 : level_);
    o.Set("maxLateNs", Napi::BigInt::New(env, maxLateNs_));
    o.Set("realtime", rtApplied_.load());
    o.Set("writeErrors", double(writeErrors_));
    o.Set("missed", double(missed_));
    o.Set("running", thread_.joinable());
    return o;
  }

  /**
   * Stop the thread and drop pending pulses. An output a pulse holds on is driven off first (the
   * safe state: closing mid-pulse must not leave the gate open); a level JS wrote is left alone.
   * Returns true when it drove the output off.
   */
  bool Stop() {
    if (thread_.joinable()) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
        windows_.clear();
      }
      Wake();
      thread_.join();
    }
    timerFd_.reset();
    wakeFd_.reset();
    std::lock_guard<std::mutex> lk(mu_);
    bool droveOff = false;
    if (ownHigh_ && level_ == 1) {
      int e = write_(0);
      int64_t t = MonoNowNs();
      if (e == 0) {
        level_ = 0;
        edges_++;
        droveOff = true;
      } else {
        writeErrors_++;
      }
      ownHigh_ = false;
      if (hasTsfn_) {
        auto* copy = new PulseEdge{0, t, t, e};
        if (tsfn_.NonBlockingCall(copy) != napi_ok) delete copy;
      }
    }
    if (hasTsfn_) {
      tsfn_.Release();
      hasTsfn_ = false;
    }
    return droveOff;
  }

 private:
  void Wake() {
    if (!wakeFd_.valid()) return;
    uint64_t one = 1;
    (void)!::write(wakeFd_.get(), &one, sizeof one);
  }

  void Run() {
    // No timer slack (default 50 us) on this thread, and real-time priority when allowed.
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    if (realtime_) {
      sched_param sp{};
      sp.sched_priority = 50;
      rtApplied_ = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
    }
    pthread_setname_np(pthread_self(), "ls-gpio-pulse");
    for (;;) {
      int64_t next = -1;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) return;
        int64_t now = MonoNowNs();
        bool active = false;
        int64_t onDeadline = INT64_MAX, offDeadline = INT64_MIN;
        for (auto& w : windows_) {
          if (w.startNs <= now && now < w.endNs) {
            active = true;
            w.driven = true;
            onDeadline = std::min(onDeadline, w.startNs);
          }
          if (w.endNs <= now) offDeadline = std::max(offDeadline, w.endNs);
        }
        // A window over before this thread ever ran for it (the machine stalled for longer than
        // the pulse): too late to drive; counted, not replayed.
        for (const auto& w : windows_)
          if (w.endNs <= now && !w.driven && !(level_ == 1 && w.startNs < now)) missed_++;
        windows_.erase(std::remove_if(windows_.begin(), windows_.end(), [now](const Window& w) { return w.endNs <= now; }),
                       windows_.end());
        int want = active ? 1 : 0;
        // level_ < 0: never driven; nothing to switch off until a pulse has switched it on.
        if (want != level_ && !(level_ < 0 && want == 0)) {
          int e = write_(want);
          int64_t t = MonoNowNs();
          int64_t deadline = want ? onDeadline : (offDeadline == INT64_MIN ? t : offDeadline);
          if (e == 0) {
            level_ = want;
            ownHigh_ = want == 1;
            edges_++;
            maxLateNs_ = std::max(maxLateNs_, t - deadline);
          } else {
            writeErrors_++;
          }
          if (hasTsfn_) {
            auto* copy = new PulseEdge{want, t, deadline, e};
            if (tsfn_.NonBlockingCall(copy) != napi_ok) delete copy;  // never waits for JS
          }
        }
        for (const auto& w : windows_) {
          int64_t at = w.startNs > now ? w.startNs : w.endNs;
          if (next < 0 || at < next) next = at;
        }
      }
      itimerspec its{};
      if (next >= 0) {
        its.it_value.tv_sec = next / 1000000000LL;
        its.it_value.tv_nsec = next % 1000000000LL;
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
      }
      timerfd_settime(timerFd_.get(), TFD_TIMER_ABSTIME, &its, nullptr);
      pollfd pfds[2] = {{timerFd_.get(), POLLIN, 0}, {wakeFd_.get(), POLLIN, 0}};
      int r = ::poll(pfds, 2, -1);
      if (r < 0 && errno != EINTR) return;
      uint64_t drain;
      if (pfds[0].revents & POLLIN) (void)!::read(timerFd_.get(), &drain, sizeof drain);
      if (pfds[1].revents & POLLIN) (void)!::read(wakeFd_.get(), &drain, sizeof drain);
    }
  }

  std::string what_;
  bool realtime_;
  Write write_;
  std::mutex mu_;
  std::vector<Window> windows_;
  std::thread thread_;
  Fd timerFd_, wakeFd_;
  bool stop_ = false;
  int level_ = -1;
  bool ownHigh_ = false;  // the engine drove the output on (not JS through NoteLevel)
  uint64_t scheduled_ = 0, edges_ = 0, writeErrors_ = 0, missed_ = 0;
  int64_t maxLateNs_ = 0;
  std::atomic<bool> rtApplied_{false};
  PulseTsfn tsfn_;
  bool hasTsfn_ = false;
};

int WriteLineValue(int fd, int value) {
  gpio_v2_line_values v{};
  v.mask = 1;
  v.bits = value ? 1 : 0;
  if (Xioctl(fd, GPIO_V2_LINE_SET_VALUES_IOCTL, &v) < 0) return errno;
  return 0;
}

int ReadLineValue(int fd, int* out) {
  gpio_v2_line_values v{};
  v.mask = 1;
  if (Xioctl(fd, GPIO_V2_LINE_GET_VALUES_IOCTL, &v) < 0) return errno;
  *out = int(v.bits & 1);
  return 0;
}

/** One byte at offset 0 of a sysfs GPIO `value` file: what `echo 1 > value` does, without the shell. */
int WriteSysfsValue(int fd, int value) {
  const char c = value ? '1' : '0';
  for (;;) {
    ssize_t n = ::pwrite(fd, &c, 1, 0);
    if (n == 1) return 0;
    if (n < 0 && errno == EINTR) continue;
    return n < 0 ? errno : EIO;
  }
}

void PulseCommon(const Napi::CallbackInfo& info, int64_t* at, int64_t* width) {
  *at = ToInt64(info[0], "atNs");
  *width = ToInt64(info[1], "widthNs");
  if (*width <= 0) throw Napi::RangeError::New(info.Env(), "schedulePulse: widthNs must be > 0");
}

/**
 * A PulseEngine without a line: fires at the deadlines and reports when it did. Without a path it
 * drives nothing (timing bench, tests, the simulator's outputs); with { path } it drives a sysfs
 * GPIO `value` file (opened O_WRONLY here, once; each edge is one pwrite from the pulse thread,
 * its time taken after the write returned, a failed write's errno reported as the edge's error).
 */
class PulseTimer : public Napi::ObjectWrap<PulseTimer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "PulseTimer",
                       {
                           InstanceMethod("schedulePulse", &PulseTimer::Schedule),
                           InstanceMethod("cancelPulses", &PulseTimer::Cancel),
                           InstanceMethod("onPulseEdge", &PulseTimer::OnEdge),
                           InstanceMethod("noteLevel", &PulseTimer::NoteLevel),
                           InstanceMethod("pulseStats", &PulseTimer::Stats),
                           InstanceMethod("close", &PulseTimer::Close),
                           InstanceAccessor("path", &PulseTimer::GetPath, nullptr),
                       });
  }
  PulseTimer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PulseTimer>(info) {
    bool realtime = false;
    if (info.Length() > 0 && info[0].IsObject()) {
      Napi::Object o = info[0].As<Napi::Object>();
      realtime = GetBool(o, "realtime", false);
      path_ = GetString(o, "path");
    }
    PulseEngine::Write write = [](int) { return 0; };
    if (!path_.empty()) {
      fd_.reset(::open(path_.c_str(), O_WRONLY | O_CLOEXEC));
      if (!fd_.valid()) ThrowSys(info.Env(), Sys("open", path_));
      int fd = fd_.get();
      write = [fd](int v) { return WriteSysfsValue(fd, v); };
    }
    engine_ = std::make_unique<PulseEngine>(path_.empty() ? "pulse-timer" : path_, realtime, std::move(write));
    env_ = info.Env();
    napi_add_env_cleanup_hook(env_, &PulseTimer::OnEnvCleanup, this);
  }
  ~PulseTimer() override {
    Teardown();
    napi_remove_env_cleanup_hook(env_, &PulseTimer::OnEnvCleanup, this);
  }
  static void OnEnvCleanup(void* self) { static_cast<PulseTimer*>(self)->Teardown(); }

 private:
  /** The thread first (it may drive the output off), then the value file. */
  bool Teardown() {
    bool droveOff = engine_ ? engine_->Stop() : false;
    fd_.reset();
    return droveOff;
  }
  Napi::Value Schedule(const Napi::CallbackInfo& info) {
    if (closed_) throw Napi::Error::New(info.Env(), "schedulePulse: the timer is closed");
    int64_t at, width;
    PulseCommon(info, &at, &width);
    SysError e = engine_->Start();
    if (e.failed()) ThrowSys(info.Env(), e);
    return Napi::Boolean::New(info.Env(), engine_->Schedule(at, width));
  }
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    engine_->Cancel();
    return info.Env().Undefined();
  }
  Napi::Value OnEdge(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "onPulseEdge(cb)");
    if (closed_) throw Napi::Error::New(info.Env(), "onPulseEdge: the timer is closed");
    engine_->SetListener(info.Env(), info[0].As<Napi::Function>());
    return info.Env().Undefined();
  }
  /** noteLevel(0|1): the level JS wrote to the output itself, so the engine's next edge is right. */
  Napi::Value NoteLevel(const Napi::CallbackInfo& info) {
    if (info.Length() < 1) throw Napi::TypeError::New(info.Env(), "noteLevel(level: 0 | 1)");
    engine_->NoteLevel(info[0].ToBoolean().Value() ? 1 : 0);
    return info.Env().Undefined();
  }
  Napi::Value Stats(const Napi::CallbackInfo& info) { return engine_->Stats(info.Env()); }
  Napi::Value GetPath(const Napi::CallbackInfo& info) {
    return path_.empty() ? info.Env().Null() : Napi::String::New(info.Env(), path_);
  }
  /** close(): true when a pulse held the output on and it was driven off. */
  Napi::Value Close(const Napi::CallbackInfo& info) {
    closed_ = true;
    return Napi::Boolean::New(info.Env(), Teardown());
  }
  Napi::Env env_{nullptr};
  std::string path_;
  Fd fd_;
  std::unique_ptr<PulseEngine> engine_;
  bool closed_ = false;
};

class Line : public Napi::ObjectWrap<Line> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "GpioLine",
                       {
                           InstanceMethod("getValue", &Line::GetValue),
                           InstanceMethod("getValueAsync", &Line::GetValueAsync),
                           InstanceMethod("setValue", &Line::SetValue),
                           InstanceMethod("setValueAsync", &Line::SetValueAsync),
                           InstanceMethod("watch", &Line::Watch),
                           InstanceMethod("unwatch", &Line::Unwatch),
                           InstanceMethod("schedulePulse", &Line::SchedulePulse),
                           InstanceMethod("cancelPulses", &Line::CancelPulses),
                           InstanceMethod("onPulseEdge", &Line::OnPulseEdge),
                           InstanceMethod("pulseStats", &Line::PulseStats),
                           InstanceMethod("close", &Line::Close),
                           InstanceAccessor("fd", &Line::GetFd, nullptr),
                           InstanceAccessor("closed", &Line::GetClosed, nullptr),
                       });
  }

  Line(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Line>(info) {
    // Only made by requestLine: (fd, output, path, offset, realtime).
    if (info.Length() != 5 || !info[0].IsNumber() || !info[2].IsString() || !info[3].IsNumber())
      throw Napi::TypeError::New(info.Env(), "GpioLine is made by gpio.requestLine()");
    fd_ = info[0].As<Napi::Number>().Int32Value();
    output_ = info[1].ToBoolean().Value();
    path_ = info[2].As<Napi::String>().Utf8Value();
    offset_ = info[3].As<Napi::Number>().Uint32Value();
    env_ = info.Env();
    if (output_) {
      int fd = fd_;
      pulses_ = std::make_unique<PulseEngine>(What(), info[4].ToBoolean().Value(), [fd](int v) { return WriteLineValue(fd, v); });
    }
    napi_add_env_cleanup_hook(env_, &Line::OnEnvCleanup, this);
  }

  ~Line() override {
    Teardown();
    napi_remove_env_cleanup_hook(env_, &Line::OnEnvCleanup, this);
  }

  static void OnEnvCleanup(void* self) { static_cast<Line*>(self)->Teardown(); }

 private:
  std::string What() const { return path_ + ":" + std::to_string(offset_); }

  void CheckOpen(Napi::Env env, const char* op) const {
    if (fd_ < 0) throw Napi::Error::New(env, std::string(op) + " on " + What() + ": the line is closed");
  }
  void CheckOutput(Napi::Env env, const char* op) const {
    CheckOpen(env, op);
    if (!output_) throw Napi::Error::New(env, std::string(op) + " on " + What() + ": the line is an input");
  }

  Napi::Value GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }
  Napi::Value GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), fd_ < 0); }

  Napi::Value GetValue(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env(), "read");
    int v = 0;
    if (int e = ReadLineValue(fd_, &v)) ThrowSys(info.Env(), Sys("ioctl(GPIO_V2_LINE_GET_VALUES)", What(), e));
    return Napi::Number::New(info.Env(), v);
  }

  Napi::Value GetValueAsync(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env(), "read");
    // dup: the line may be closed while the read is on the pool.
    int dupFd = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
    if (dupFd < 0) ThrowSys(info.Env(), Sys("dup", What()));
    auto fd = std::make_shared<Fd>(dupFd);
    auto value = std::make_shared<int>(0);
    std::string what = What();
    return PromiseWorker::Run(
        info.Env(), "linesight:gpio-read",
        [fd, value, what]() -> SysError {
          if (int e = ReadLineValue(fd->get(), value.get())) return Sys("ioctl(GPIO_V2_LINE_GET_VALUES)", what, e);
          return {};
        },
        [value](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *value); });
  }

  Napi::Value SetValue(const Napi::CallbackInfo& info) {
    CheckOutput(info.Env(), "write");
    int v = info[0].ToBoolean().Value() ? 1 : 0;
    if (int e = WriteLineValue(fd_, v)) ThrowSys(info.Env(), Sys("ioctl(GPIO_V2_LINE_SET_VALUES)", What(), e));
    pulses_->NoteLevel(v);
    return info.Env().Undefined();
  }

  /** The write on the pool: on an I2C/SPI expander the ioctl sleeps for the bus transfer. */
  Napi::Value SetValueAsync(const Napi::CallbackInfo& info) {
    CheckOutput(info.Env(), "write");
    int v = info[0].ToBoolean().Value() ? 1 : 0;
    int dupFd = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
    if (dupFd < 0) ThrowSys(info.Env(), Sys("dup", What()));
    auto fd = std::make_shared<Fd>(dupFd);
    std::string what = What();
    pulses_->NoteLevel(v);
    return PromiseWorker::Run(
        info.Env(), "linesight:gpio-write",
        [fd, v, what]() -> SysError {
          if (int e = WriteLineValue(fd->get(), v)) return Sys("ioctl(GPIO_V2_LINE_SET_VALUES)", what, e);
          return {};
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  }

  // ── edge events ──────────────────────────────────────────────────────────────────────────────

  Napi::Value Watch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env, "watch");
    if (output_) throw Napi::Error::New(env, "watch on " + What() + ": the line is an output");
    if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "watch(cb: (value, timeNs, seqno, lineSeqno) => void)");
    onEdge_ = Napi::Persistent(info[0].As<Napi::Function>());
    if (poll_ != nullptr) return env.Undefined();
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no libuv loop");
    asyncCtx_ = std::make_unique<Napi::AsyncContext>(env, "linesight:gpio-edge");
    poll_ = new uv_poll_t;
    if (int r = uv_poll_init(loop, poll_, fd_)) {
      delete poll_;
      poll_ = nullptr;
      throw Napi::Error::New(env, std::string("uv_poll_init on ") + What() + ": " + uv_strerror(r));
    }
    poll_->data = this;
    uv_poll_start(poll_, UV_READABLE, &Line::OnReadable);
    Ref();  // the poll handle points at this object: keep it alive while watching
    return env.Undefined();
  }

  Napi::Value Unwatch(const Napi::CallbackInfo& info) {
    StopPoll(true);
    onEdge_.Reset();
    return info.Env().Undefined();
  }

  void StopPoll(bool unref) {
    if (poll_ == nullptr) return;
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
    if (unref) Unref();
  }

  static void OnReadable(uv_poll_t* h, int status, int /*events*/) {
    auto* self = static_cast<Line*>(h->data);
    if (self == nullptr || self->fd_ < 0) return;
    Napi::Env env = self->env_;
    Napi::HandleScope scope(env);
    if (status < 0) {
      self->DeliverError(std::string("poll on ") + self->What() + ": " + uv_strerror(status));
      return;
    }
    gpio_v2_line_event evs[16];
    for (;;) {
      if (self->fd_ < 0) return;
      ssize_t n = ::read(self->fd_, evs, sizeof evs);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) self->DeliverError(Sys("read", self->What()).Message());
        return;
      }
      size_t count = size_t(n) / sizeof evs[0];
      for (size_t i = 0; i < count && self->fd_ >= 0 && !self->onEdge_.IsEmpty(); i++) {
        const auto& ev = evs[i];
        int value = ev.id == GPIO_V2_LINE_EVENT_RISING_EDGE ? 1 : 0;
        try {
          self->onEdge_.MakeCallback(env.Global(),
                                     {env.Null(), Napi::Number::New(env, value), Napi::BigInt::New(env, int64_t(ev.timestamp_ns)),
                                      Napi::Number::New(env, ev.seqno), Napi::Number::New(env, ev.line_seqno)},
                                     *self->asyncCtx_);
        } catch (const Napi::Error& e) {
          napi_fatal_exception(env, e.Value());
          return;
        }
      }
      if (size_t(n) < sizeof evs) return;
    }
  }

  void DeliverError(const std::string& msg) {
    if (onEdge_.IsEmpty()) return;
    Napi::Env env = env_;
    try {
      onEdge_.MakeCallback(env.Global(), {Napi::Error::New(env, msg).Value()}, *asyncCtx_);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  }

  // ── pulses ───────────────────────────────────────────────────────────────────────────────────

  Napi::Value OnPulseEdge(const Napi::CallbackInfo& info) {
    CheckOutput(info.Env(), "onPulseEdge");
    if (info.Length() < 1 || !info[0].IsFunction())
      throw Napi::TypeError::New(info.Env(), "onPulseEdge(cb: (level, atNs, deadlineNs, errno) => void)");
    pulses_->SetListener(info.Env(), info[0].As<Napi::Function>());
    return info.Env().Undefined();
  }

  /** schedulePulse(atNs, widthNs): true when accepted (the end is still ahead). */
  Napi::Value SchedulePulse(const Napi::CallbackInfo& info) {
    CheckOutput(info.Env(), "schedulePulse");
    int64_t at, width;
    PulseCommon(info, &at, &width);
    SysError e = pulses_->Start();
    if (e.failed()) ThrowSys(info.Env(), e);
    return Napi::Boolean::New(info.Env(), pulses_->Schedule(at, width));
  }

  Napi::Value CancelPulses(const Napi::CallbackInfo& info) {
    if (pulses_) pulses_->Cancel();
    return info.Env().Undefined();
  }

  Napi::Value PulseStats(const Napi::CallbackInfo& info) {
    CheckOutput(info.Env(), "pulseStats");
    return pulses_->Stats(info.Env());
  }

  /** Native-only teardown: safe from the destructor and from the env cleanup hook. */
  void Teardown(bool fromJs = false) {
    if (pulses_) pulses_->Stop();
    StopPoll(fromJs);
    if (fd_ >= 0) {
      ::close(fd_);  // the kernel releases the line here
      fd_ = -1;
    }
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Teardown(true);
    onEdge_.Reset();
    asyncCtx_.reset();
    return info.Env().Undefined();
  }

  Napi::Env env_{nullptr};
  int fd_ = -1;
  bool output_ = false;
  std::string path_;
  uint32_t offset_ = 0;

  uv_poll_t* poll_ = nullptr;
  Napi::FunctionReference onEdge_;
  std::unique_ptr<Napi::AsyncContext> asyncCtx_;
  std::unique_ptr<PulseEngine> pulses_;
};

/**
 * requestLine({ path, offset, direction: 'input'|'output', edge, activeLow, bias, debounceUs,
 * initial, consumer, eventBufferSize, realtime }): Promise<GpioLine>
 */
Napi::Value RequestLine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "requestLine(options)");
  Napi::Object o = info[0].As<Napi::Object>();
  std::string path = GetString(o, "path");
  if (path.empty()) throw Napi::TypeError::New(env, "requestLine: path is required");
  int64_t offset = GetInt(o, "offset", -1);
  if (offset < 0 || offset >= GPIO_V2_LINES_MAX * 1024) throw Napi::RangeError::New(env, "requestLine: offset must be >= 0");
  std::string direction = GetString(o, "direction", "input");
  std::string edge = GetString(o, "edge", "none");
  std::string bias = GetString(o, "bias", "as-is");
  bool activeLow = GetBool(o, "activeLow", false);
  int64_t debounceUs = GetInt(o, "debounceUs", 0);
  int64_t initial = GetInt(o, "initial", 0);
  std::string consumer = GetString(o, "consumer", "linesight");
  int64_t eventBuffer = GetInt(o, "eventBufferSize", 0);
  bool realtime = GetBool(o, "realtime", false);

  auto req = std::make_shared<gpio_v2_line_request>();
  std::memset(req.get(), 0, sizeof *req);
  req->offsets[0] = uint32_t(offset);
  req->num_lines = 1;
  std::strncpy(req->consumer, consumer.c_str(), sizeof req->consumer - 1);
  req->event_buffer_size = uint32_t(std::max<int64_t>(0, eventBuffer));
  auto& cfg = req->config;
  bool output;
  if (direction == "output") {
    output = true;
    cfg.flags = GPIO_V2_LINE_FLAG_OUTPUT;
    cfg.attrs[0].attr.id = GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES;
    cfg.attrs[0].attr.values = initial ? 1 : 0;
    cfg.attrs[0].mask = 1;
    cfg.num_attrs = 1;
  } else if (direction == "input") {
    output = false;
    cfg.flags = GPIO_V2_LINE_FLAG_INPUT;
    if (edge == "rising") cfg.flags |= GPIO_V2_LINE_FLAG_EDGE_RISING;
    else if (edge == "falling") cfg.flags |= GPIO_V2_LINE_FLAG_EDGE_FALLING;
    else if (edge == "both") cfg.flags |= GPIO_V2_LINE_FLAG_EDGE_RISING | GPIO_V2_LINE_FLAG_EDGE_FALLING;
    else if (edge != "none") throw Napi::TypeError::New(env, "requestLine: edge must be none, rising, falling or both");
    if (debounceUs > 0) {
      if (debounceUs > UINT32_MAX) throw Napi::RangeError::New(env, "requestLine: debounceUs too large");
      cfg.attrs[0].attr.id = GPIO_V2_LINE_ATTR_ID_DEBOUNCE;
      cfg.attrs[0].attr.debounce_period_us = uint32_t(debounceUs);
      cfg.attrs[0].mask = 1;
      cfg.num_attrs = 1;
    }
  } else {
    throw Napi::TypeError::New(env, "requestLine: direction must be 'input' or 'output'");
  }
  if (activeLow) cfg.flags |= GPIO_V2_LINE_FLAG_ACTIVE_LOW;
  if (bias == "pull-up") cfg.flags |= GPIO_V2_LINE_FLAG_BIAS_PULL_UP;
  else if (bias == "pull-down") cfg.flags |= GPIO_V2_LINE_FLAG_BIAS_PULL_DOWN;
  else if (bias == "disabled") cfg.flags |= GPIO_V2_LINE_FLAG_BIAS_DISABLED;
  else if (bias != "as-is") throw Napi::TypeError::New(env, "requestLine: bias must be as-is, pull-up, pull-down or disabled");

  auto lineFd = std::make_shared<int>(-1);
  std::string what = path + ":" + std::to_string(offset);
  return PromiseWorker::Run(
      env, "linesight:gpio-request",
      [path, req, lineFd, what]() -> SysError {
        Fd chip(::open(path.c_str(), O_RDWR | O_CLOEXEC));
        if (!chip.valid()) return Sys("open", path);
        gpiochip_info ci{};
        if (Xioctl(chip.get(), GPIO_GET_CHIPINFO_IOCTL, &ci) < 0) {
          int e = errno;
          return Sys("ioctl(GPIO_GET_CHIPINFO)", path, e, e == ENOTTY || e == EINVAL ? "not a GPIO chip" : "");
        }
        if (req->offsets[0] >= ci.lines)
          return Sys("", what, EINVAL, "offset " + std::to_string(req->offsets[0]) + " is out of range: chip '" +
                                           std::string(ci.label) + "' has " + std::to_string(ci.lines) + " lines");
        if (Xioctl(chip.get(), GPIO_V2_GET_LINE_IOCTL, req.get()) < 0) {
          int e = errno;
          return Sys("ioctl(GPIO_V2_GET_LINE)", what, e,
                     e == EBUSY ? "the line is held by another consumer (a kernel driver or another process)" : "");
        }
        int fl = ::fcntl(req->fd, F_GETFL);
        if (fl >= 0) ::fcntl(req->fd, F_SETFL, fl | O_NONBLOCK);
        *lineFd = req->fd;
        return {};
      },
      [lineFd, output, path, offset, realtime](Napi::Env env) -> Napi::Value {
        return Data(env)->gpioLine.New({Napi::Number::New(env, *lineFd), Napi::Boolean::New(env, output), Napi::String::New(env, path),
                                Napi::Number::New(env, double(offset)), Napi::Boolean::New(env, realtime)});
      });
}

}  // namespace

void InitGpio(Napi::Env env, Napi::Object exports) {
  Data(env)->gpioLine = Napi::Persistent(Line::Define(env));
  Data(env)->pulseTimer = Napi::Persistent(PulseTimer::Define(env));
  Napi::Object gpio = Napi::Object::New(env);
  gpio.Set("listChips", Napi::Function::New(env, ListChips, "listChips"));
  gpio.Set("chipInfo", Napi::Function::New(env, ChipInfoJs, "chipInfo"));
  gpio.Set("lineInfo", Napi::Function::New(env, LineInfoJs, "lineInfo"));
  gpio.Set("requestLine", Napi::Function::New(env, RequestLine, "requestLine"));
  gpio.Set("PulseTimer", Data(env)->pulseTimer.Value());
  gpio.Set("monotonicNs", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
             return Napi::BigInt::New(info.Env(), MonoNowNs());
           }, "monotonicNs"));
  exports.Set("gpio", gpio);
}

}  // namespace linesight
