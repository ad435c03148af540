// V4L2 video capture: open, formats and sizes, set a format, mmap streaming, controls.
//
// A capture thread waits on the device fd (poll), dequeues a buffer, converts/copies it once into
// a fresh heap block (YUYV/GREY/RGB24 -> gray or rgb; anything else, e.g. MJPEG, as is), puts the
// driver buffer straight back in the queue, and hands the block to JS as an external Buffer through
// a ThreadSafeFunction. If JS falls behind (more than `queue` frames waiting), the frame is dropped
// and counted: the newest frame is what an inspection wants, and the thread never waits for JS.
//
// Timestamps: the driver's when it stamps buffers with CLOCK_MONOTONIC (V4L2_BUF_FLAG_TIMESTAMP_
// MONOTONIC, what UVC and vivid do), the dequeue time otherwise (tsSource says which).

#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"
#include "convert.h"

namespace linesight {
namespace {

struct FrameMsg {
  uint8_t* data = nullptr;
  size_t size = 0;
  uint32_t sequence = 0;
  int64_t timestampNs = 0;
  bool driverTs = false;
  int64_t dequeuedNs = 0;
  uint32_t bytesUsed = 0;
  bool corrupt = false;  // V4L2_BUF_FLAG_ERROR
  uint64_t dropped = 0;  // frames dropped before this one (JS too slow)
  std::string error;     // set: a fatal capture error, no frame
  int errnum = 0;
};

struct StreamInfo {
  uint32_t fourcc = 0, width = 0, height = 0, stride = 0, channels = 0;
  Target target = Target::Raw;
  std::atomic<uint32_t> inflight{0};  // frames handed to the TSFN and not yet delivered
};

void CallFrame(Napi::Env env, Napi::Function cb, StreamInfo* info, FrameMsg* m);
using FrameTsfn = Napi::TypedThreadSafeFunction<StreamInfo, FrameMsg, CallFrame>;

void CallFrame(Napi::Env env, Napi::Function cb, StreamInfo* si, FrameMsg* m) {
  std::unique_ptr<FrameMsg> owned(m);
  if (m->error.empty() && si != nullptr) si->inflight--;
  if (env == nullptr || cb.IsEmpty()) {
    free(m->data);
    return;
  }
  if (!m->error.empty()) {
    SysError e{m->errnum, "", "", m->error};
    cb.Call({e.ToJs(env).Value()});
    return;
  }
  Napi::Object f = Napi::Object::New(env);
  uint8_t* data = m->data;
  m->data = nullptr;
  f.Set("data", Napi::Buffer<uint8_t>::New(env, data, m->size, [](Napi::Env, uint8_t* p) { free(p); }));
  f.Set("sequence", m->sequence);
  f.Set("timestampNs", Napi::BigInt::New(env, m->timestampNs));
  f.Set("tsSource", m->driverTs ? "driver" : "dequeue");
  f.Set("dequeuedNs", Napi::BigInt::New(env, m->dequeuedNs));
  f.Set("bytesUsed", m->bytesUsed);
  f.Set("corrupt", m->corrupt);
  f.Set("dropped", double(m->dropped));
  f.Set("fourcc", FourccString(si->fourcc));
  f.Set("width", si->width);
  f.Set("height", si->height);
  f.Set("channels", si->channels);
  cb.Call({env.Null(), f});
}

struct MappedBuffer {
  void* addr = MAP_FAILED;
  size_t length = 0;
};

class Device : public Napi::ObjectWrap<Device> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "V4l2Device",
                       {
                           InstanceMethod("info", &Device::Info),
                           InstanceMethod("formats", &Device::Formats),
                           InstanceMethod("getFormat", &Device::GetFormat),
                           InstanceMethod("setFormat", &Device::SetFormat),
                           InstanceMethod("setFrameRate", &Device::SetFrameRate),
                           InstanceMethod("controls", &Device::Controls),
                           InstanceMethod("getControl", &Device::GetControl),
                           InstanceMethod("setControl", &Device::SetControl),
                           InstanceMethod("start", &Device::Start),
                           InstanceMethod("stop", &Device::Stop),
                           InstanceMethod("stats", &Device::Stats),
                           InstanceMethod("close", &Device::Close),
                           InstanceAccessor("streaming", &Device::GetStreaming, nullptr),
                       });
  }

  Device(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Device>(info) {
    if (info.Length() != 2 || !info[0].IsNumber() || !info[1].IsString())
      throw Napi::TypeError::New(info.Env(), "V4l2Device is made by v4l2.open()");
    fd_ = info[0].As<Napi::Number>().Int32Value();
    path_ = info[1].As<Napi::String>().Utf8Value();
    env_ = info.Env();
    napi_add_env_cleanup_hook(env_, &Device::OnEnvCleanup, this);
  }

  ~Device() override {
    Teardown();
    napi_remove_env_cleanup_hook(env_, &Device::OnEnvCleanup, this);
  }

  static void OnEnvCleanup(void* self) { static_cast<Device*>(self)->Teardown(); }

 private:
  void CheckOpen(Napi::Env env, const char* op) const {
    if (fd_ < 0) throw Napi::Error::New(env, std::string(op) + " on " + path_ + ": the device is closed");
  }

  /** A dup of the fd for work on the pool, so close() during the work cannot reuse the number. */
  std::shared_ptr<Fd> DupFd(Napi::Env env) {
    int d = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
    if (d < 0) ThrowSys(env, Sys("dup", path_));
    return std::make_shared<Fd>(d);
  }

  Napi::Value GetStreaming(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), streaming_); }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env, "info");
    v4l2_capability cap{};
    if (Xioctl(fd_, VIDIOC_QUERYCAP, &cap) < 0) ThrowSys(env, Sys("ioctl(VIDIOC_QUERYCAP)", path_));
    uint32_t caps = (cap.capabilities & V4L2_CAP_DEVICE_CAPS) ? cap.device_caps : cap.capabilities;
    Napi::Object o = Napi::Object::New(env);
    o.Set("driver", std::string(reinterpret_cast<char*>(cap.driver)));
    o.Set("card", std::string(reinterpret_cast<char*>(cap.card)));
    o.Set("busInfo", std::string(reinterpret_cast<char*>(cap.bus_info)));
    o.Set("version", cap.version);
    o.Set("capabilities", caps);
    o.Set("capture", bool(caps & V4L2_CAP_VIDEO_CAPTURE));
    o.Set("captureMplane", bool(caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE));
    o.Set("streaming", bool(caps & V4L2_CAP_STREAMING));
    return o;
  }

  static Napi::Object FormatToJs(Napi::Env env, const v4l2_pix_format& p) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("fourcc", FourccString(p.pixelformat));
    o.Set("width", p.width);
    o.Set("height", p.height);
    o.Set("bytesPerLine", p.bytesperline);
    o.Set("sizeImage", p.sizeimage);
    o.Set("field", p.field);
    o.Set("colorspace", p.colorspace);
    return o;
  }

  struct SizeEntry {
    int type;  // V4L2_FRMSIZE_TYPE_*
    uint32_t w, h, minW, maxW, stepW, minH, maxH, stepH;
  };
  struct FormatEntry {
    uint32_t fourcc, flags;
    std::string description;
    std::vector<SizeEntry> sizes;
  };

  Napi::Value Formats(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env(), "formats");
    auto fd = DupFd(info.Env());
    auto out = std::make_shared<std::vector<FormatEntry>>();
    std::string path = path_;
    return PromiseWorker::Run(
        info.Env(), "linesight:v4l2-formats",
        [fd, out, path]() -> SysError {
          for (uint32_t i = 0;; i++) {
            v4l2_fmtdesc d{};
            d.index = i;
            d.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
            if (Xioctl(fd->get(), VIDIOC_ENUM_FMT, &d) < 0) {
              if (errno == EINVAL) break;
              return Sys("ioctl(VIDIOC_ENUM_FMT)", path);
            }
            FormatEntry fe{d.pixelformat, d.flags, reinterpret_cast<char*>(d.description), {}};
            for (uint32_t j = 0;; j++) {
              v4l2_frmsizeenum s{};
              s.index = j;
              s.pixel_format = d.pixelformat;
              if (Xioctl(fd->get(), VIDIOC_ENUM_FRAMESIZES, &s) < 0) break;
              if (s.type == V4L2_FRMSIZE_TYPE_DISCRETE) {
                fe.sizes.push_back({int(s.type), s.discrete.width, s.discrete.height, 0, 0, 0, 0, 0, 0});
              } else {
                const auto& w = s.stepwise;
                fe.sizes.push_back({int(s.type), 0, 0, w.min_width, w.max_width, w.step_width, w.min_height, w.max_height,
                                    w.step_height});
                break;  // stepwise/continuous is a single entry
              }
            }
            out->push_back(std::move(fe));
          }
          return {};
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Array arr = Napi::Array::New(env, out->size());
          for (size_t i = 0; i < out->size(); i++) {
            const auto& f = (*out)[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("fourcc", FourccString(f.fourcc));
            o.Set("description", f.description);
            o.Set("compressed", bool(f.flags & V4L2_FMT_FLAG_COMPRESSED));
            Napi::Array sizes = Napi::Array::New(env);
            uint32_t n = 0;
            for (const auto& s : f.sizes) {
              Napi::Object so = Napi::Object::New(env);
              if (s.type == V4L2_FRMSIZE_TYPE_DISCRETE) {
                so.Set("width", s.w);
                so.Set("height", s.h);
              } else {
                so.Set("minWidth", s.minW);
                so.Set("maxWidth", s.maxW);
                so.Set("stepWidth", s.stepW);
                so.Set("minHeight", s.minH);
                so.Set("maxHeight", s.maxH);
                so.Set("stepHeight", s.stepH);
              }
              sizes.Set(n++, so);
            }
            o.Set("sizes", sizes);
            arr.Set(uint32_t(i), o);
          }
          return arr;
        });
  }

  Napi::Value GetFormat(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env, "getFormat");
    v4l2_format f{};
    f.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    if (Xioctl(fd_, VIDIOC_G_FMT, &f) < 0) ThrowSys(env, Sys("ioctl(VIDIOC_G_FMT)", path_));
    return FormatToJs(env, f.fmt.pix);
  }

  /** setFormat({ fourcc, width, height }): the format the driver settled on (it may adjust). */
  Napi::Value SetFormat(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env, "setFormat");
    if (streaming_) throw Napi::Error::New(env, "setFormat on " + path_ + ": stop streaming first");
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "setFormat({ fourcc, width, height })");
    Napi::Object o = info[0].As<Napi::Object>();
    auto f = std::make_shared<v4l2_format>();
    std::memset(f.get(), 0, sizeof *f);
    f->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    f->fmt.pix.pixelformat = FourccFromString(GetString(o, "fourcc", "YUYV"));
    f->fmt.pix.width = uint32_t(GetInt(o, "width", 640));
    f->fmt.pix.height = uint32_t(GetInt(o, "height", 480));
    f->fmt.pix.field = V4L2_FIELD_NONE;
    auto fd = DupFd(env);
    std::string path = path_;
    return PromiseWorker::Run(
        env, "linesight:v4l2-setformat",
        [fd, f, path]() -> SysError {
          if (Xioctl(fd->get(), VIDIOC_S_FMT, f.get()) < 0) return Sys("ioctl(VIDIOC_S_FMT)", path);
          return {};
        },
        [f](Napi::Env env) -> Napi::Value { return FormatToJs(env, f->fmt.pix); });
  }

  Napi::Value SetFrameRate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env, "setFrameRate");
    double fps = info[0].ToNumber().DoubleValue();
    if (!(fps > 0)) throw Napi::RangeError::New(env, "setFrameRate(fps > 0)");
    auto p = std::make_shared<v4l2_streamparm>();
    std::memset(p.get(), 0, sizeof *p);
    p->type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    p->parm.capture.timeperframe.numerator = 1000;
    p->parm.capture.timeperframe.denominator = uint32_t(fps * 1000 + 0.5);
    auto fd = DupFd(env);
    std::string path = path_;
    return PromiseWorker::Run(
        env, "linesight:v4l2-setfps",
        [fd, p, path]() -> SysError {
          if (Xioctl(fd->get(), VIDIOC_S_PARM, p.get()) < 0) return Sys("ioctl(VIDIOC_S_PARM)", path);
          return {};
        },
        [p](Napi::Env env) -> Napi::Value {
          const auto& t = p->parm.capture.timeperframe;
          return Napi::Number::New(env, t.numerator ? double(t.denominator) / t.numerator : 0);
        });
  }

  struct ControlEntry {
    uint32_t id, type, flags;
    std::string name;
    int64_t min, max, step, def, value;
    std::vector<std::pair<int64_t, std::string>> menu;
  };

  Napi::Value Controls(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env(), "controls");
    auto fd = DupFd(info.Env());
    auto out = std::make_shared<std::vector<ControlEntry>>();
    return PromiseWorker::Run(
        info.Env(), "linesight:v4l2-controls",
        [fd, out]() -> SysError {
          v4l2_query_ext_ctrl q{};
          q.id = V4L2_CTRL_FLAG_NEXT_CTRL;
          while (Xioctl(fd->get(), VIDIOC_QUERY_EXT_CTRL, &q) == 0) {
            uint32_t id = q.id;
            bool usable = !(q.flags & V4L2_CTRL_FLAG_DISABLED) && q.type != V4L2_CTRL_TYPE_CTRL_CLASS &&
                          (q.type == V4L2_CTRL_TYPE_INTEGER || q.type == V4L2_CTRL_TYPE_BOOLEAN ||
                           q.type == V4L2_CTRL_TYPE_MENU || q.type == V4L2_CTRL_TYPE_INTEGER_MENU ||
                           q.type == V4L2_CTRL_TYPE_INTEGER64 || q.type == V4L2_CTRL_TYPE_BUTTON);
            if (usable) {
              ControlEntry c{id, q.type, q.flags, q.name, q.minimum, q.maximum, int64_t(q.step), q.default_value, 0, {}};
              if (!(q.flags & V4L2_CTRL_FLAG_WRITE_ONLY) && q.type != V4L2_CTRL_TYPE_BUTTON) {
                v4l2_ext_control ec{};
                ec.id = id;
                v4l2_ext_controls ecs{};
                ecs.which = V4L2_CTRL_WHICH_CUR_VAL;
                ecs.count = 1;
                ecs.controls = &ec;
                if (Xioctl(fd->get(), VIDIOC_G_EXT_CTRLS, &ecs) == 0)
                  c.value = q.type == V4L2_CTRL_TYPE_INTEGER64 ? ec.value64 : ec.value;
              }
              if (q.type == V4L2_CTRL_TYPE_MENU || q.type == V4L2_CTRL_TYPE_INTEGER_MENU) {
                for (int64_t i = q.minimum; i <= q.maximum; i++) {
                  v4l2_querymenu m{};
                  m.id = id;
                  m.index = uint32_t(i);
                  if (Xioctl(fd->get(), VIDIOC_QUERYMENU, &m) == 0)
                    c.menu.emplace_back(i, q.type == V4L2_CTRL_TYPE_MENU ? std::string(reinterpret_cast<char*>(m.name))
                                                                           : std::to_string(m.value));
                }
              }
              out->push_back(std::move(c));
            }
            q = v4l2_query_ext_ctrl{};
            q.id = id | V4L2_CTRL_FLAG_NEXT_CTRL;
          }
          return {};
        },
        [out](Napi::Env env) -> Napi::Value {
          Napi::Array arr = Napi::Array::New(env, out->size());
          for (size_t i = 0; i < out->size(); i++) {
            const auto& c = (*out)[i];
            Napi::Object o = Napi::Object::New(env);
            o.Set("id", c.id);
            o.Set("name", c.name);
            const char* type = "integer";
            switch (c.type) {
              case V4L2_CTRL_TYPE_BOOLEAN: type = "boolean"; break;
              case V4L2_CTRL_TYPE_MENU: type = "menu"; break;
              case V4L2_CTRL_TYPE_INTEGER_MENU: type = "intmenu"; break;
              case V4L2_CTRL_TYPE_INTEGER64: type = "integer64"; break;
              case V4L2_CTRL_TYPE_BUTTON: type = "button"; break;
            }
            o.Set("type", type);
            o.Set("min", double(c.min));
            o.Set("max", double(c.max));
            o.Set("step", double(c.step));
            o.Set("default", double(c.def));
            o.Set("value", double(c.value));
            o.Set("readOnly", bool(c.flags & V4L2_CTRL_FLAG_READ_ONLY));
            o.Set("inactive", bool(c.flags & V4L2_CTRL_FLAG_INACTIVE));
            if (!c.menu.empty()) {
              Napi::Array m = Napi::Array::New(env, c.menu.size());
              for (size_t j = 0; j < c.menu.size(); j++) {
                Napi::Object e = Napi::Object::New(env);
                e.Set("index", double(c.menu[j].first));
                e.Set("name", c.menu[j].second);
                m.Set(uint32_t(j), e);
              }
              o.Set("menu", m);
            }
            arr.Set(uint32_t(i), o);
          }
          return arr;
        });
  }

  Napi::Value GetControl(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env(), "getControl");
    uint32_t id = uint32_t(ToInt64(info[0], "id"));
    auto fd = DupFd(info.Env());
    auto value = std::make_shared<int64_t>(0);
    std::string path = path_;
    return PromiseWorker::Run(
        info.Env(), "linesight:v4l2-getctrl",
        [fd, id, value, path]() -> SysError {
          v4l2_query_ext_ctrl q{};
          q.id = id;
          if (Xioctl(fd->get(), VIDIOC_QUERY_EXT_CTRL, &q) < 0) return Sys("ioctl(VIDIOC_QUERY_EXT_CTRL)", path);
          v4l2_ext_control ec{};
          ec.id = id;
          v4l2_ext_controls ecs{};
          ecs.which = V4L2_CTRL_WHICH_CUR_VAL;
          ecs.count = 1;
          ecs.controls = &ec;
          if (Xioctl(fd->get(), VIDIOC_G_EXT_CTRLS, &ecs) < 0) return Sys("ioctl(VIDIOC_G_EXT_CTRLS)", path);
          *value = q.type == V4L2_CTRL_TYPE_INTEGER64 ? ec.value64 : ec.value;
          return {};
        },
        [value](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, double(*value)); });
  }

  Napi::Value SetControl(const Napi::CallbackInfo& info) {
    CheckOpen(info.Env(), "setControl");
    uint32_t id = uint32_t(ToInt64(info[0], "id"));
    int64_t v = ToInt64(info[1], "value");
    auto fd = DupFd(info.Env());
    std::string path = path_;
    return PromiseWorker::Run(
        info.Env(), "linesight:v4l2-setctrl",
        [fd, id, v, path]() -> SysError {
          v4l2_query_ext_ctrl q{};
          q.id = id;
          if (Xioctl(fd->get(), VIDIOC_QUERY_EXT_CTRL, &q) < 0) return Sys("ioctl(VIDIOC_QUERY_EXT_CTRL)", path);
          v4l2_ext_control ec{};
          ec.id = id;
          if (q.type == V4L2_CTRL_TYPE_INTEGER64)
            ec.value64 = v;
          else
            ec.value = int32_t(v);
          v4l2_ext_controls ecs{};
          ecs.which = V4L2_CTRL_WHICH_CUR_VAL;
          ecs.count = 1;
          ecs.controls = &ec;
          if (Xioctl(fd->get(), VIDIOC_S_EXT_CTRLS, &ecs) < 0) {
            int e = errno;
            return Sys("ioctl(VIDIOC_S_EXT_CTRLS)", path, e,
                       std::string("control '") + q.name + "'" +
                           (e == EACCES ? " is read-only or inactive (e.g. an auto mode is on)" : ""));
          }
          return {};
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  }

  // ── streaming ────────────────────────────────────────────────────────────────────────────────

  /** start({ buffers = 4, convert = 'raw'|'gray'|'rgb', queue = 2 }, onFrame(err, frame)): Promise<info> */
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    CheckOpen(env, "start");
    if (streaming_ || starting_ || hasTsfn_) throw Napi::Error::New(env, "start on " + path_ + ": already streaming");
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction())
      throw Napi::TypeError::New(env, "start({ buffers, convert, queue }, onFrame)");
    Napi::Object o = info[0].As<Napi::Object>();
    uint32_t nbuf = uint32_t(std::max<int64_t>(2, std::min<int64_t>(32, GetInt(o, "buffers", 4))));
    std::string convert = GetString(o, "convert", "raw");
    size_t queue = size_t(std::max<int64_t>(1, GetInt(o, "queue", 2)));
    Target target = convert == "gray" ? Target::Gray : convert == "rgb" ? Target::Rgb : Target::Raw;
    if (convert != "gray" && convert != "rgb" && convert != "raw")
      throw Napi::TypeError::New(env, "start: convert must be 'raw', 'gray' or 'rgb'");

    v4l2_format f{};
    f.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    if (Xioctl(fd_, VIDIOC_G_FMT, &f) < 0) ThrowSys(env, Sys("ioctl(VIDIOC_G_FMT)", path_));
    if (target != Target::Raw && !CanConvert(f.fmt.pix.pixelformat))
      throw Napi::Error::New(env, "start on " + path_ + ": cannot convert " + FourccString(f.fmt.pix.pixelformat) +
                                      " to " + convert + " natively (use convert 'raw' and decode it)");
    auto fd = DupFd(env);  // before anything that would need undoing
    auto* si = new StreamInfo{f.fmt.pix.pixelformat, f.fmt.pix.width, f.fmt.pix.height, f.fmt.pix.bytesperline,
                              uint32_t(target == Target::Gray ? 1 : target == Target::Rgb ? 3 : 0), target};
    // Unbounded TSFN queue (a fatal error always gets through); frames are limited by `inflight`.
    tsfn_ = FrameTsfn::New(env, info[1].As<Napi::Function>(), "linesight:v4l2-frame", 0, 1, si,
                           [](Napi::Env, void*, StreamInfo* ctx) { delete ctx; });
    hasTsfn_ = true;
    ctx_ = si;
    maxInflight_ = uint32_t(queue);
    starting_ = true;

    // REQBUFS / mmap / STREAMON can take a while on USB cameras: on the pool.
    std::string path = path_;
    auto bufs = std::make_shared<std::vector<MappedBuffer>>();
    auto self = std::make_shared<Napi::ObjectReference>(Napi::Persistent(Value()));
    auto wake = std::make_shared<Fd>();
    return PromiseWorker::Run(
        env, "linesight:v4l2-start",
        [fd, nbuf, bufs, path, wake]() -> SysError {
          v4l2_requestbuffers rb{};
          rb.count = nbuf;
          rb.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
          rb.memory = V4L2_MEMORY_MMAP;
          if (Xioctl(fd->get(), VIDIOC_REQBUFS, &rb) < 0) return Sys("ioctl(VIDIOC_REQBUFS)", path);
          if (rb.count < 2) return Sys("", path, ENOMEM, "the driver gave fewer than 2 buffers");
          for (uint32_t i = 0; i < rb.count; i++) {
            v4l2_buffer b{};
            b.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
            b.memory = V4L2_MEMORY_MMAP;
            b.index = i;
            if (Xioctl(fd->get(), VIDIOC_QUERYBUF, &b) < 0) return Sys("ioctl(VIDIOC_QUERYBUF)", path);
            MappedBuffer m;
            m.length = b.length;
            m.addr = ::mmap(nullptr, b.length, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), b.m.offset);
            if (m.addr == MAP_FAILED) return Sys("mmap", path);
            bufs->push_back(m);
            if (Xioctl(fd->get(), VIDIOC_QBUF, &b) < 0) return Sys("ioctl(VIDIOC_QBUF)", path);
          }
          int type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
          if (Xioctl(fd->get(), VIDIOC_STREAMON, &type) < 0) return Sys("ioctl(VIDIOC_STREAMON)", path);
          wake->reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
          if (!wake->valid()) return Sys("eventfd", path);
          return {};
        },
        [this, self, bufs, wake](Napi::Env env) -> Napi::Value {
          starting_ = false;
          buffers_ = std::move(*bufs);
          streaming_ = true;  // from here StopStreaming undoes it all
          if (fd_ < 0) {
            StopStreaming();
            throw Napi::Error::New(env, "start on " + path_ + ": the device was closed while starting");
          }
          wakeFd_ = std::move(*wake);
          thread_ = std::thread([this]() { Run(); });
          Napi::Object o = Napi::Object::New(env);
          o.Set("buffers", double(buffers_.size()));
          o.Set("fourcc", FourccString(ctx_->fourcc));
          o.Set("width", ctx_->width);
          o.Set("height", ctx_->height);
          o.Set("bytesPerLine", ctx_->stride);
          return o;
        },
        [this, self, bufs](Napi::Env) {
          // Failed part-way: undo what was done (the buffers not yet moved into buffers_).
          starting_ = false;
          for (auto& m : *bufs)
            if (m.addr != MAP_FAILED) ::munmap(m.addr, m.length);
          bufs->clear();
          streaming_ = fd_ >= 0;  // StreamOff + REQBUFS(0) on the fd if it is still open
          StopStreaming();
        });
  }

  void Run() {
    pthread_setname_np(pthread_self(), "ls-v4l2-capture");
    uint64_t dropped = 0;
    for (;;) {
      pollfd pfds[2] = {{fd_, POLLIN, 0}, {wakeFd_.get(), POLLIN, 0}};
      int r = ::poll(pfds, 2, -1);
      if (r < 0) {
        if (errno == EINTR) continue;
        Fatal(Sys("poll", path_));
        return;
      }
      if (pfds[1].revents & POLLIN) return;  // stop
      if (pfds[0].revents & (POLLERR | POLLHUP | POLLNVAL) && !(pfds[0].revents & POLLIN)) {
        Fatal(Sys("poll", path_, ENODEV, "the device reported an error (unplugged?)"));
        return;
      }
      v4l2_buffer b{};
      b.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
      b.memory = V4L2_MEMORY_MMAP;
      if (Xioctl(fd_, VIDIOC_DQBUF, &b) < 0) {
        if (errno == EAGAIN) continue;
        Fatal(Sys("ioctl(VIDIOC_DQBUF)", path_));
        return;
      }
      int64_t dq = MonoNowNs();
      auto* m = new FrameMsg();
      m->sequence = b.sequence;
      m->bytesUsed = b.bytesused;
      m->corrupt = (b.flags & V4L2_BUF_FLAG_ERROR) != 0;
      m->driverTs = (b.flags & V4L2_BUF_FLAG_TIMESTAMP_MASK) == V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC &&
                    (b.timestamp.tv_sec != 0 || b.timestamp.tv_usec != 0);
      m->timestampNs = m->driverTs ? int64_t(b.timestamp.tv_sec) * 1000000000LL + int64_t(b.timestamp.tv_usec) * 1000LL : dq;
      m->dequeuedNs = dq;
      m->dropped = dropped;
      const MappedBuffer& mb = buffers_[b.index];
      const StreamInfo& si = *ctx_;
      bool send = ctx_->inflight.load() < maxInflight_;
      if (send) {
        size_t used = std::min<size_t>(b.bytesused ? b.bytesused : mb.length, mb.length);
        size_t size = ConvertedSize(si.fourcc, si.target, si.width, si.height, used);
        m->data = static_cast<uint8_t*>(malloc(size ? size : 1));
        m->size = size;
        if (m->data == nullptr ||
            !ConvertFrame(static_cast<const uint8_t*>(mb.addr), used, si.fourcc, si.width, si.height, si.stride, si.target,
                          m->data)) {
          m->corrupt = true;  // truncated: JS reports a bad frame
          m->size = 0;
        }
      }
      frames_++;
      // Back to the driver before JS sees anything: the one copy is done.
      if (Xioctl(fd_, VIDIOC_QBUF, &b) < 0) {
        free(m->data);
        delete m;
        Fatal(Sys("ioctl(VIDIOC_QBUF)", path_));
        return;
      }
      if (!send) {  // JS is `queue` frames behind: drop this one, keep going
        delete m;
        dropped++;
        dropped_++;
        continue;
      }
      ctx_->inflight++;
      napi_status st = tsfn_.NonBlockingCall(m);
      if (st == napi_ok) {
        dropped = 0;
      } else {
        ctx_->inflight--;
        free(m->data);
        delete m;
        if (st == napi_closing) return;
      }
    }
  }

  void Fatal(const SysError& e) {
    errors_++;
    auto* m = new FrameMsg();
    m->error = e.Message();
    m->errnum = e.errnum;
    if (tsfn_.NonBlockingCall(m) != napi_ok) delete m;  // unbounded queue: only fails when closing
  }

  /** Stop the thread, stream off, unmap. Native only (destructor, cleanup hook, close, stop). */
  void StopStreaming() {
    if (thread_.joinable()) {
      uint64_t one = 1;
      (void)!::write(wakeFd_.get(), &one, sizeof one);
      thread_.join();
    }
    wakeFd_.reset();
    if (streaming_ && fd_ >= 0) {
      int type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
      Xioctl(fd_, VIDIOC_STREAMOFF, &type);
    }
    for (auto& m : buffers_)
      if (m.addr != MAP_FAILED) ::munmap(m.addr, m.length);
    buffers_.clear();
    if (streaming_ && fd_ >= 0) {
      v4l2_requestbuffers rb{};
      rb.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
      rb.memory = V4L2_MEMORY_MMAP;
      Xioctl(fd_, VIDIOC_REQBUFS, &rb);
    }
    streaming_ = false;
    if (hasTsfn_) {
      tsfn_.Release();
      hasTsfn_ = false;
      ctx_ = nullptr;
    }
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    // The thread never waits on JS (except to report a fatal error, after which it exits), and the
    // wake fd ends its poll at once: joining here is short.
    StopStreaming();
    return info.Env().Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("frames", double(frames_.load()));
    o.Set("dropped", double(dropped_.load()));
    o.Set("errors", double(errors_.load()));
    return o;
  }

  void Teardown() {
    StopStreaming();
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Teardown();
    return info.Env().Undefined();
  }

  Napi::Env env_{nullptr};
  int fd_ = -1;
  std::string path_;
  bool streaming_ = false, starting_ = false;
  StreamInfo* ctx_ = nullptr;  // owned by the TSFN (deleted when it finalizes)
  uint32_t maxInflight_ = 2;
  std::vector<MappedBuffer> buffers_;
  Fd wakeFd_;
  std::thread thread_;
  FrameTsfn tsfn_;
  bool hasTsfn_ = false;
  std::atomic<uint64_t> frames_{0}, dropped_{0}, errors_{0};
};

/** open(path): Promise<V4l2Device>. Checks that it is a streaming single-planar capture device. */
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "open(path: string)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  auto fd = std::make_shared<int>(-1);
  return PromiseWorker::Run(
      env, "linesight:v4l2-open",
      [path, fd]() -> SysError {
        Fd f(::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
        if (!f.valid()) return Sys("open", path);
        v4l2_capability cap{};
        if (Xioctl(f.get(), VIDIOC_QUERYCAP, &cap) < 0) {
          int e = errno;
          return Sys("ioctl(VIDIOC_QUERYCAP)", path, e, e == ENOTTY ? "not a V4L2 device" : "");
        }
        uint32_t caps = (cap.capabilities & V4L2_CAP_DEVICE_CAPS) ? cap.device_caps : cap.capabilities;
        if (!(caps & V4L2_CAP_VIDEO_CAPTURE)) {
          return Sys("", path, ENOTSUP,
                     std::string("'") + reinterpret_cast<char*>(cap.card) + "' is not a single-planar video capture device" +
                         ((caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE) ? " (multi-planar capture is not supported)" : "") +
                         " (metadata/output nodes of the same camera have their own /dev/videoN)");
        }
        if (!(caps & V4L2_CAP_STREAMING)) return Sys("", path, ENOTSUP, "the device does not support streaming I/O");
        *fd = f.release();
        return {};
      },
      [fd, path](Napi::Env env) -> Napi::Value {
        return Data(env)->v4l2Device.New({Napi::Number::New(env, *fd), Napi::String::New(env, path)});
      });
}

/** convert(src, fourcc, width, height, bytesPerLine, 'gray'|'rgb'): Buffer (the capture thread's conversion). */
Napi::Value Convert(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "convert(src, fourcc, width, height, bytesPerLine, target)");
  auto src = info[0].As<Napi::TypedArray>();
  const uint8_t* p = static_cast<const uint8_t*>(src.ArrayBuffer().Data()) + src.ByteOffset();
  uint32_t fourcc = FourccFromString(info[1].As<Napi::String>().Utf8Value());
  uint32_t w = info[2].As<Napi::Number>().Uint32Value(), h = info[3].As<Napi::Number>().Uint32Value();
  uint32_t stride = info[4].As<Napi::Number>().Uint32Value();
  std::string t = info[5].As<Napi::String>().Utf8Value();
  Target target = t == "gray" ? Target::Gray : t == "rgb" ? Target::Rgb : Target::Raw;
  size_t size = ConvertedSize(fourcc, target, w, h, src.ByteLength());
  if (size == 0) throw Napi::Error::New(env, "convert: unsupported " + FourccString(fourcc) + " -> " + t);
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::New(env, size);
  if (!ConvertFrame(p, src.ByteLength(), fourcc, w, h, stride, target, out.Data()))
    throw Napi::Error::New(env, "convert: the source is shorter than " + std::to_string(h) + " rows of " + std::to_string(stride) + " bytes");
  return out;
}

}  // namespace

void InitV4l2(Napi::Env env, Napi::Object exports) {
  Data(env)->v4l2Device = Napi::Persistent(Device::Define(env));
  Napi::Object v = Napi::Object::New(env);
  v.Set("open", Napi::Function::New(env, Open, "open"));
  v.Set("convert", Napi::Function::New(env, Convert, "convert"));
  Napi::Object cid = Napi::Object::New(env);
  cid.Set("BRIGHTNESS", uint32_t(V4L2_CID_BRIGHTNESS));
  cid.Set("CONTRAST", uint32_t(V4L2_CID_CONTRAST));
  cid.Set("GAIN", uint32_t(V4L2_CID_GAIN));
  cid.Set("AUTOGAIN", uint32_t(V4L2_CID_AUTOGAIN));
  cid.Set("EXPOSURE", uint32_t(V4L2_CID_EXPOSURE));
  cid.Set("EXPOSURE_AUTO", uint32_t(V4L2_CID_EXPOSURE_AUTO));
  cid.Set("EXPOSURE_ABSOLUTE", uint32_t(V4L2_CID_EXPOSURE_ABSOLUTE));
  cid.Set("ANALOGUE_GAIN", uint32_t(V4L2_CID_ANALOGUE_GAIN));
  cid.Set("EXPOSURE_MANUAL", uint32_t(V4L2_EXPOSURE_MANUAL));
  v.Set("cid", cid);
  exports.Set("v4l2", v);
}

}  // namespace linesight
